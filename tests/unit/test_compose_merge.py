"""Several -c files merged in order, as compose merges them."""
from __future__ import annotations

import textwrap

import pytest

from cli.compose import ComposeError, load_stack


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def merged(tmp_path, base, *overrides, env=None):
    paths = [write(tmp_path, "base.yml", base)]
    for index, text in enumerate(overrides):
        paths.append(write(tmp_path, f"override{index}.yml", text))
    return load_stack(paths, "m", env or {})


BASE = """
    version: "3.8"
    services:
      web:
        image: app:1
        command: [serve, --port, "80"]
        environment:
          A: base
          B: base
        labels: [keep=1]
        ports: ["80:80"]
        volumes:
          - data:/data
          - ./conf:/conf:ro
        secrets: [s1]
        dns: [1.1.1.1]
        cap_add: [NET_ADMIN]
        ulimits:
          nofile: 1000
        networks:
          front:
            aliases: [a1]
        deploy:
          replicas: 2
          labels: {tier: web}
          placement:
            constraints: [node.role == worker]
          resources:
            limits:
              memory: 64M
              cpus: "1"
        healthcheck:
          test: [CMD, /check]
          interval: 10s
      db:
        image: db:1
    networks:
      front:
    volumes:
      data:
    secrets:
      s1:
        file: s1.txt
"""


def by_name(plan):
    return {s["Name"]: s for s in plan.services}


def test_override_merges_maps_and_replaces_scalars(tmp_path):
    plan = merged(tmp_path, BASE, """
        services:
          web:
            image: app:2
            environment:
              B: over
              C: new
            labels:
              added: "2"
            deploy:
              replicas: 5
              resources:
                limits:
                  memory: 128M
            healthcheck:
              test: curl -f localhost
    """)
    web = by_name(plan)["m_web"]
    container = web["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == "app:2"
    assert web["Labels"]["com.docker.stack.image"] == "app:2"
    assert container["Env"] == ["A=base", "B=over", "C=new"]
    assert container["Labels"] == {"keep": "1", "added": "2", "com.docker.stack.namespace": "m"}
    assert web["Mode"] == {"Replicated": {"Replicas": 5}}
    assert web["Labels"]["tier"] == "web"
    assert web["TaskTemplate"]["Resources"] == {"Limits": {"NanoCPUs": 1_000_000_000, "MemoryBytes": 128 << 20}}
    # lists that are one command are replaced, not appended
    assert container["Args"] == ["serve", "--port", "80"]
    assert container["HealthCheck"] == {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 10_000_000_000}
    # untouched service survives
    assert by_name(plan)["m_db"]["TaskTemplate"]["ContainerSpec"]["Image"] == "db:1"


def test_list_and_map_forms_merge_together(tmp_path):
    plan = merged(tmp_path, BASE, """
        services:
          web:
            environment:
              - A=from-list
            labels:
              keep: "changed"
    """)
    container = by_name(plan)["m_web"]["TaskTemplate"]["ContainerSpec"]
    assert container["Env"] == ["A=from-list", "B=base"]
    assert container["Labels"]["keep"] == "changed"


def test_command_and_entrypoint_are_replaced(tmp_path):
    plan = merged(tmp_path, BASE, "services:\n  web:\n    command: run --fast\n    entrypoint: [/e]\n")
    container = by_name(plan)["m_web"]["TaskTemplate"]["ContainerSpec"]
    assert container["Args"] == ["run", "--fast"]
    assert container["Command"] == ["/e"]


def test_sequences_append_without_duplicates(tmp_path):
    plan = merged(tmp_path, BASE, """
        services:
          web:
            dns: [1.1.1.1, 8.8.8.8]
            cap_add: [SYS_TIME]
            deploy:
              placement:
                constraints: [node.role == worker, node.labels.ssd == true]
            networks:
              front:
                aliases: [a2]
    """)
    web = by_name(plan)["m_web"]
    container = web["TaskTemplate"]["ContainerSpec"]
    assert container["DNSConfig"]["Nameservers"] == ["1.1.1.1", "8.8.8.8"]
    assert container["CapabilityAdd"] == ["CAP_NET_ADMIN", "CAP_SYS_TIME"]
    assert web["TaskTemplate"]["Placement"]["Constraints"] == ["node.role == worker", "node.labels.ssd == true"]
    assert web["TaskTemplate"]["Networks"] == [{"Target": "m_front", "Aliases": ["a1", "a2", "web"]}]


def test_ports_union_volumes_by_target_secrets_by_source(tmp_path):
    plan = merged(tmp_path, BASE, """
        services:
          web:
            ports: ["80:80", "443:443"]
            volumes:
              - other:/data
              - /new:/new
            secrets:
              - source: s1
                target: renamed
              - s2
            ulimits:
              nofile:
                soft: 10
                hard: 20
        volumes:
          other:
        secrets:
          s2:
            external: true
    """)
    container = by_name(plan)["m_web"]["TaskTemplate"]["ContainerSpec"]
    assert [p["PublishedPort"] for p in by_name(plan)["m_web"]["EndpointSpec"]["Ports"]] == [80, 443]
    assert [(m.get("Source"), m["Target"]) for m in container["Mounts"]] == [
        ("m_other", "/data"), (str(tmp_path / "conf"), "/conf"), ("/new", "/new"),
    ]
    assert [(s["SecretName"], s["File"]["Name"]) for s in container["Secrets"]] == [("m_s1", "renamed"), ("s2", "s2")]
    assert container["Ulimits"] == [{"Name": "nofile", "Soft": 10, "Hard": 20}]


def test_new_services_and_objects_in_override(tmp_path):
    plan = merged(tmp_path, BASE, """
        services:
          cache:
            image: redis
            networks: [back]
        networks:
          back:
            driver_opts: {encrypted: "1"}
          front:
            labels: [from=override]
    """)
    assert sorted(by_name(plan)) == ["m_cache", "m_db", "m_web"]
    assert plan.networks["m_back"]["Options"] == {"encrypted": "1"}
    assert plan.networks["m_front"]["Labels"] == {"from": "override", "com.docker.stack.namespace": "m"}
    # db and web still attach to the implicit default network / front
    assert "m_default" in plan.networks


def test_three_files_apply_in_order(tmp_path):
    plan = merged(tmp_path, BASE,
                  "services:\n  web:\n    image: app:2\n",
                  "services:\n  web:\n    image: app:3\n    hostname: third\n")
    container = by_name(plan)["m_web"]["TaskTemplate"]["ContainerSpec"]
    assert (container["Image"], container["Hostname"]) == ("app:3", "third")
    plan = merged(tmp_path, BASE,
                  "services:\n  web:\n    image: app:3\n",
                  "services:\n  web:\n    image: app:2\n")
    assert by_name(plan)["m_web"]["TaskTemplate"]["ContainerSpec"]["Image"] == "app:2"


def test_override_may_be_version_less_and_partial(tmp_path):
    plan = merged(tmp_path, BASE, "services:\n  db:\n    deploy:\n      mode: global\n")
    assert by_name(plan)["m_db"]["Mode"] == {"Global": {}}


def test_conflict_created_by_merge_is_reported_at_the_override(tmp_path):
    with pytest.raises(ComposeError) as exc:
        merged(tmp_path, BASE, "services:\n  web:\n    deploy:\n      mode: global\n")
    # replicas comes from the base file, the mode from the override: the error names replicas' line
    assert str(exc.value).startswith(f"{tmp_path}/base.yml:23: services.web.deploy.replicas: replicas can only be used")


def test_each_file_is_validated_with_its_own_name(tmp_path):
    with pytest.raises(ComposeError) as exc:
        merged(tmp_path, BASE, "services:\n  web:\n    deploy:\n      replicas: lots\n")
    assert str(exc.value) == f'{tmp_path}/override0.yml:4: services.web.deploy.replicas: must be an integer, got "lots"'


def test_warnings_are_not_repeated_across_files(tmp_path):
    plan = merged(tmp_path, "services:\n  web:\n    image: a\n    build: .\n", "services:\n  web:\n    build: ./other\n    restart: always\n")
    assert plan.warnings == ["Ignoring unsupported options: build, restart"]


def test_relative_paths_resolve_against_the_first_file(tmp_path):
    (tmp_path / "over").mkdir()
    base = write(tmp_path, "base.yml", "services:\n  web:\n    image: a\n")
    over = write(tmp_path, "over/o.yml", "services:\n  web:\n    volumes: ['./x:/x']\n")
    plan = load_stack([base, over], "m", {})
    assert plan.services[0]["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"] == str(tmp_path / "x")
