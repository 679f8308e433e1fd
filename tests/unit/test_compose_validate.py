"""Validation: every refusal names file, line and key path; ignored keys are warnings."""
from __future__ import annotations

import textwrap

import pytest

from cli.compose import ComposeError, load_stack


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def error_of(tmp_path, text, env=None):
    path = write(tmp_path, "stack.yml", text)
    with pytest.raises(ComposeError) as exc:
        load_stack([path], "s", env or {})
    message = str(exc.value)
    assert "\n" not in message
    prefix = f"{tmp_path}/"
    assert message.startswith(prefix), message
    return message[len(prefix):]


def test_the_issue_example(tmp_path):
    path = tmp_path / "stack.yml"
    path.write_text("# padding\n" * 9 + textwrap.dedent("""\
        services:
          web:
            image: nginx
            deploy:
              replicas: three
    """))
    with pytest.raises(ComposeError) as exc:
        load_stack([str(path)], "s", {})
    assert str(exc.value) == f'{path}:14: services.web.deploy.replicas: must be an integer, got "three"'
    assert exc.value.pos.line == 14 and exc.value.path == "services.web.deploy.replicas"


@pytest.mark.parametrize("service_yaml, expected", [
    ("imgae: a", 'stack.yml:3: services.web.imgae: unknown key (did you mean "image"?)'),
    ("image: a\nfoo: 1", "stack.yml:4: services.web.foo: unknown key"),
    ("image: a\ndeploy:\n  replica: 2", 'stack.yml:5: services.web.deploy.replica: unknown key (did you mean "replicas"?)'),
    ("image: a\ndeploy:\n  resources:\n    limits:\n      memroy: 1g",
     'stack.yml:7: services.web.deploy.resources.limits.memroy: unknown key (did you mean "memory"?)'),
    ("image: a\nhealthcheck:\n  test: [CMD, x]\n  intervall: 5s",
     'stack.yml:6: services.web.healthcheck.intervall: unknown key (did you mean "interval"?)'),
    ("image: a\nports:\n  - target: 80\n    publish: 80",
     'stack.yml:6: services.web.ports[0].publish: unknown key (did you mean "published"?)'),
    ("image: a\nsecrets:\n  - source: s\n    traget: x", 'stack.yml:6: services.web.secrets[0].traget: unknown key (did you mean "target"?)'),
    ("image: a\nvolumes:\n  - type: bind\n    source: /a\n    target: /b\n    readonly: true",
     'stack.yml:8: services.web.volumes[0].readonly: unknown key (did you mean "read_only"?)'),
    ("image: a\nnetworks:\n  front:\n    alias: [x]", 'stack.yml:6: services.web.networks.front.alias: unknown key (did you mean "aliases"?)'),
])
def test_unknown_keys(tmp_path, service_yaml, expected):
    text = "services:\n  web:\n" + textwrap.indent(service_yaml, "    ") + "\n"
    text += "networks:\n  front:\nsecrets:\n  s:\n    external: true\n"
    assert error_of(tmp_path, text) == expected


def test_unknown_top_level_and_object_keys(tmp_path):
    assert error_of(tmp_path, "services:\n  web:\n    image: a\nservice:\n  x: 1\n") == \
        'stack.yml:4: service: unknown key (did you mean "services"?)'
    assert error_of(tmp_path, "services:\n  web:\n    image: a\nnetworks:\n  n:\n    drive: overlay\n") == \
        'stack.yml:6: networks.n.drive: unknown key (did you mean "driver"?)'
    assert error_of(tmp_path, "services:\n  web:\n    image: a\nsecrets:\n  s:\n    fil: x\n") == \
        'stack.yml:6: secrets.s.fil: unknown key (did you mean "file"?)'


@pytest.mark.parametrize("service_yaml, expected", [
    ("image: [a]", "stack.yml:3: services.web.image: must be a string, got a list"),
    ("image: ''", "stack.yml:3: services.web.image: must not be empty"),
    ("image: a\ndeploy:\n  replicas: -1", "stack.yml:5: services.web.deploy.replicas: must be at least 0, got -1"),
    ("image: a\ndeploy:\n  replicas: 1.5", "stack.yml:5: services.web.deploy.replicas: must be an integer, got 1.5"),
    ("image: a\ndeploy:\n  replicas: true", "stack.yml:5: services.web.deploy.replicas: must be an integer, got true"),
    ("image: a\ndeploy:\n  mode: replicate",
     'stack.yml:5: services.web.deploy.mode: must be one of "replicated", "global", "replicated-job", "global-job", got "replicate"'),
    ("image: a\ndeploy: 3", "stack.yml:4: services.web.deploy: must be a mapping, got 3"),
    ("image: a\nread_only: maybe", 'stack.yml:4: services.web.read_only: must be true or false, got "maybe"'),
    ("image: a\nstop_grace_period: 10", 'stack.yml:4: services.web.stop_grace_period: must be a duration such as "10s" or "1m30s", got 10'),
    ("image: a\nstop_grace_period: 10x", 'stack.yml:4: services.web.stop_grace_period: invalid duration "10x" (use a number with a unit: "500ms", "10s", "1m30s", "2h")'),
    ("image: a\ndeploy:\n  resources:\n    limits:\n      memory: lots",
     'stack.yml:7: services.web.deploy.resources.limits.memory: invalid size "lots" (use bytes or a number with k, m, g, t or p, e.g. "64M")'),
    ("image: a\ndeploy:\n  resources:\n    limits:\n      cpus: half",
     'stack.yml:7: services.web.deploy.resources.limits.cpus: invalid CPU count "half" (use a number of CPUs such as 0.5 or 2)'),
    ("image: a\ndeploy:\n  update_config:\n    max_failure_ratio: 2",
     "stack.yml:6: services.web.deploy.update_config.max_failure_ratio: must be at most 1, got 2"),
    ("image: a\ndeploy:\n  rollback_config:\n    failure_action: rollback",
     'stack.yml:6: services.web.deploy.rollback_config.failure_action: must be one of "continue", "pause", got "rollback"'),
    ("image: a\ndeploy:\n  restart_policy:\n    condition: always",
     'stack.yml:6: services.web.deploy.restart_policy.condition: must be one of "none", "on-failure", "any", got "always"'),
    ("image: a\ndeploy:\n  endpoint_mode: rr", 'stack.yml:5: services.web.deploy.endpoint_mode: must be one of "vip", "dnsrr", got "rr"'),
    ("image: a\ndeploy:\n  placement:\n    constraints: node.role==manager",
     'stack.yml:6: services.web.deploy.placement.constraints: must be a list, got "node.role==manager"'),
    ("image: a\ndeploy:\n  placement:\n    constraints: [a==b, a==b]",
     'stack.yml:6: services.web.deploy.placement.constraints[1]: duplicate entry "a==b"'),
    ("image: a\nports:\n  - 99999:80", "stack.yml:5: services.web.ports[0]: published port 99999 is out of range 1-65535"),
    ("image: a\nports:\n  - 80/icmp", 'stack.yml:5: services.web.ports[0]: invalid protocol "icmp" (use tcp, udp or sctp)'),
    ("image: a\nports:\n  - 8000-8002:80-81", 'stack.yml:5: services.web.ports[0]: invalid port "8000-8002:80-81": the published and target ranges differ in length'),
    ("image: a\nports:\n  - published: 80", 'stack.yml:5: services.web.ports[0]: missing required key "target"'),
    ("image: a\nports:\n  - target: 80\n    mode: bridge", 'stack.yml:6: services.web.ports[0].mode: must be one of "ingress", "host", got "bridge"'),
    ("image: a\nvolumes:\n  - a:b:c:d", 'stack.yml:5: services.web.volumes[0]: invalid volume "a:b:c:d": too many colons'),
    ("image: a\nvolumes:\n  - ./a:/b:rx", 'stack.yml:5: services.web.volumes[0]: invalid volume "./a:/b:rx": unknown option "rx"'),
    ("image: a\nvolumes:\n  - type: bind\n    target: /b", "stack.yml:5: services.web.volumes[0]: a bind mount needs a source"),
    ("image: a\nvolumes:\n  - type: npipe\n    source: x\n    target: /b",
     'stack.yml:5: services.web.volumes[0].type: volume type "npipe" is not supported (use volume, bind or tmpfs)'),
    ("image: a\nvolumes:\n  - type: tmpfs\n    target: /b\n    bind:\n      propagation: shared",
     'stack.yml:7: services.web.volumes[0].bind: bind options do not apply to a volume of type "tmpfs"'),
    ("image: a\ntmpfs: run", 'stack.yml:4: services.web.tmpfs: invalid tmpfs "run": the path must be absolute'),
    ("image: a\ntmpfs: ['/run:size=1q']", 'stack.yml:4: services.web.tmpfs[0]: invalid size "1q" (use bytes or a number with k, m, g, t or p, e.g. "64M")'),
    ("image: a\nulimits:\n  nofile:\n    soft: 10", 'stack.yml:5: services.web.ulimits.nofile: missing required key "hard"'),
    ("image: a\nulimits:\n  nofile:\n    soft: 10\n    hard: 5", "stack.yml:5: services.web.ulimits.nofile: soft limit 10 is above the hard limit 5"),
    ("image: a\nulimits:\n  NOFILE: 5", 'stack.yml:5: services.web.ulimits.NOFILE: invalid ulimit name "NOFILE" (allowed: letters, digits, \'.\', \'_\', \'-\')'),
    ("image: a\nextra_hosts: [nohost]", 'stack.yml:4: services.web.extra_hosts[0]: must be a "host:ip" string, got "nohost"'),
    ("image: a\nhealthcheck:\n  test: [bash, -c, x]", "stack.yml:5: services.web.healthcheck.test[0]: must start with \"CMD\", \"CMD-SHELL\" or \"NONE\", got 'bash'"),
    ("image: a\nhealthcheck:\n  test: []", 'stack.yml:5: services.web.healthcheck.test: must not be empty (use ["NONE"] or disable: true to turn the check off)'),
    ("image: a\nenvironment: FOO=bar", 'stack.yml:4: services.web.environment: must be a mapping or a list of KEY=VALUE strings, got "FOO=bar"'),
    ("image: a\nenvironment:\n  A: [1]", "stack.yml:5: services.web.environment.A: must be a string, number or boolean, got a list"),
    ("image: a\nlabels:\n  - =x", 'stack.yml:5: services.web.labels[0]: missing the name before "=" in "=x"'),
    ("image: a\ncommand: \"echo 'unterminated\"", "stack.yml:4: services.web.command: cannot split the command: No closing quotation"),
    ("image: a\nsecrets:\n  - source: s\n    mode: 99999", "stack.yml:6: services.web.secrets[0].mode: must be between 0 and 07777, got 0o303237"),
    ("image: a\nsecrets:\n  - source: s\n    mode: '0999'", 'stack.yml:6: services.web.secrets[0].mode: must be a file mode such as 0440 or "0440", got "0999"'),
    ("image: a\nnetworks: front", 'stack.yml:4: services.web.networks: must be a list of network names or a mapping, got "front"'),
    ("image: a\nnetworks: [front, front]", 'stack.yml:4: services.web.networks[1]: network "front" is listed twice'),
    ("image: a\nisolation: vm", 'stack.yml:4: services.web.isolation: must be one of "default", "process", "hyperv", got "vm"'),
])
def test_type_errors(tmp_path, service_yaml, expected):
    text = "services:\n  web:\n" + textwrap.indent(service_yaml, "    ") + "\n"
    text += "networks:\n  front:\nsecrets:\n  s:\n    external: true\n"
    assert error_of(tmp_path, text) == expected


@pytest.mark.parametrize("service_yaml, fragment", [
    ("extends: base", "services.web.extends: not supported by stack deploy: support for extends"),
    ("volumes_from: [other]", "services.web.volumes_from: not supported by stack deploy"),
    ("mem_limit: 1g", "services.web.mem_limit: not supported by stack deploy: set resource limits under deploy.resources"),
    ("cpu_shares: 2", "services.web.cpu_shares: not supported"),
])
def test_forbidden_keys_are_refused_with_advice(tmp_path, service_yaml, fragment):
    text = "services:\n  web:\n    image: a\n" + textwrap.indent(service_yaml, "    ") + "\n"
    assert error_of(tmp_path, text).startswith(f"stack.yml:4: {fragment}")


def test_forbidden_top_level_include(tmp_path):
    assert error_of(tmp_path, "include: [a.yml]\nservices:\n  web:\n    image: a\n").startswith(
        "stack.yml:1: include: not supported by stack deploy")


@pytest.mark.parametrize("version, ok", [
    ('"3"', True), ('"3.8"', True), ("3.9", True), ("3", True), ('"3.10"', True),
    ('"2.4"', False), ("2", False), ('"1"', False), ('"4.0"', False), ("[3]", False),
])
def test_versions(tmp_path, version, ok):
    text = f"version: {version}\nservices:\n  web:\n    image: a\n"
    path = write(tmp_path, "stack.yml", text)
    if ok:
        load_stack([path], "s", {})
    else:
        with pytest.raises(ComposeError) as exc:
            load_stack([path], "s", {})
        assert str(exc.value).startswith(f"{path}:1: version: unsupported version")


def test_version_less_file_is_accepted(tmp_path):
    path = write(tmp_path, "stack.yml", "services:\n  web:\n    image: a\n")
    assert load_stack([path], "s", {}).services[0]["Name"] == "s_web"


def test_invalid_names(tmp_path):
    assert error_of(tmp_path, "services:\n  'we b':\n    image: a\n") == \
        "stack.yml:2: services.we b: invalid service name \"we b\" (allowed: letters, digits, '.', '_', '-')"
    assert error_of(tmp_path, "services:\n  web.v2:\n    image: a\n").startswith(
        'stack.yml:2: services.web.v2: service name "s_web.v2" is not valid in swarm')
    long_name = "x" * 70
    assert "not valid in swarm" in error_of(tmp_path, f"services:\n  {long_name}:\n    image: a\n")


def test_missing_image_and_services(tmp_path):
    assert error_of(tmp_path, "services:\n  web:\n    build: .\n") == \
        "stack.yml:2: services.web: image is required (stack deploy runs images, it does not build them)"
    assert error_of(tmp_path, "services: {}\n") == "stack.yml:1: services: a stack needs at least one service"
    assert error_of(tmp_path, "networks: {}\n") == "stack.yml:1: services: a stack needs at least one service"
    assert error_of(tmp_path, "services:\n  web:\n") == \
        "stack.yml:2: services.web: image is required (stack deploy runs images, it does not build them)"


def test_ignored_keys_are_one_warning_and_conversion_goes_on(tmp_path):
    path = write(tmp_path, "stack.yml", """
        name: myproject
        services:
          web:
            image: a
            build: .
            restart: always
            depends_on: [db]
            container_name: web1
            links: [db]
            network_mode: bridge
            privileged: true
            expose: ["80"]
            deploy:
              resources:
                reservations:
                  devices:
                    - capabilities: [gpu]
            networks:
              default:
                ipv4_address: 10.0.0.5
            ports:
              - target: 80
                app_protocol: http
          db:
            image: b
            build:
              context: .
    """)
    plan = load_stack([path], "s", {})
    assert plan.warnings[0] == (
        "Ignoring unsupported options: build, container_name, depends_on, deploy.resources.reservations.devices, "
        "expose, links, network_mode, networks.default.ipv4_address, ports[0].app_protocol, privileged, restart"
    )
    assert plan.warnings[1] == "Ignoring unsupported top-level keys: name"
    assert [s["Name"] for s in plan.services] == ["s_db", "s_web"]


def test_host_ip_and_tmpfs_flags_warn(tmp_path):
    path = write(tmp_path, "stack.yml", """
        services:
          web:
            image: a
            ports:
              - "127.0.0.1:8080:80"
            tmpfs:
              - /run:noexec,nosuid,size=1m
    """)
    plan = load_stack([path], "s", {})
    assert plan.warnings == [
        f'{path}:5: services.web.ports[0]: host IP "127.0.0.1" is ignored: swarm publishes on every address',
        f"{path}:7: services.web.tmpfs[0]: tmpfs options not supported in swarm mode are ignored: noexec, nosuid",
    ]


def test_extension_keys_allowed_everywhere(tmp_path):
    path = write(tmp_path, "stack.yml", """
        x-top: 1
        services:
          web:
            x-svc: {a: 1}
            image: a
            deploy:
              x-deploy: true
              resources:
                x-res: 1
    """)
    assert load_stack([path], "s", {}).warnings == []


def test_null_values_count_as_absent(tmp_path):
    path = write(tmp_path, "stack.yml", """
        services:
          web:
            image: a
            environment:
            deploy:
            labels:
            command:
    """)
    spec = load_stack([path], "s", {}).services[0]
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    assert "Args" not in spec["TaskTemplate"]["ContainerSpec"]


@pytest.mark.parametrize("objects, expected", [
    ("networks:\n  n:\n    external: true\n    driver: overlay", 'stack.yml:8: networks.n.driver: an external network cannot set "driver"'),
    ("volumes:\n  v:\n    external:\n      name: a\n    name: b", "stack.yml:7: volumes.v.external: volume.external.name and volume.name conflict; use volume.name only"),
    ("secrets:\n  s:\n    labels: {a: b}", "stack.yml:6: secrets.s: a secret needs file, environment or external"),
    ("configs:\n  c:\n    labels: {a: b}", "stack.yml:6: configs.c: a config needs file, environment, content or external"),
    ("secrets:\n  s:\n    file: a\n    environment: B", "stack.yml:8: secrets.s.environment: file and environment cannot both be set; choose one source"),
    ("secrets:\n  s:\n    environment: NOT_SET_ANYWHERE", 'stack.yml:7: secrets.s.environment: environment variable "NOT_SET_ANYWHERE" is not set'),
    ("networks:\n  n:\n    external: maybe", 'stack.yml:7: networks.n.external: must be true or false, got "maybe"'),
])
def test_top_level_object_errors(tmp_path, objects, expected):
    text = "services:\n  web:\n    image: a\n    networks: [default]\n" + objects + "\n"
    assert error_of(tmp_path, text) == expected
