"""Round trips from compose YAML to Docker Engine API service specs, key by key."""
from __future__ import annotations

import base64
import json
import textwrap

import pytest

from cli.compose import ComposeError, StackPlan, load_stack

NS = {"com.docker.stack.namespace": "st"}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def plan_of(tmp_path, service_yaml, extra="", env=None) -> StackPlan:
    text = "services:\n  web:\n    image: busybox:latest\n" + textwrap.indent(textwrap.dedent(service_yaml).strip("\n"), "    ") + "\n"
    text += textwrap.dedent(extra)
    path = tmp_path / "stack.yml"
    path.write_text(text)
    return load_stack([str(path)], "st", env or {})


def spec_of(tmp_path, service_yaml, extra="", env=None) -> dict:
    plan = plan_of(tmp_path, service_yaml, extra, env)
    return plan.services[0]


def container_of(tmp_path, service_yaml, extra="", env=None) -> dict:
    return spec_of(tmp_path, service_yaml, extra, env)["TaskTemplate"]["ContainerSpec"]


def test_minimal_service_is_exactly_what_docker_builds(tmp_path):
    spec = spec_of(tmp_path, "")
    assert spec == {
        "Name": "st_web",
        "Labels": {**NS, "com.docker.stack.image": "busybox:latest"},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox:latest", "Labels": NS},
            "Networks": [{"Target": "st_default", "Aliases": ["web"]}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }
    json.dumps(spec)  # plain JSON-able values only


def test_plan_is_plain_data(tmp_path):
    plan = plan_of(tmp_path, "environment: {A: b}\nports: ['80:80']", "networks: {}\n")
    for part in (plan.services, plan.networks, plan.secrets, plan.configs):
        assert json.loads(json.dumps(part)) == part
        stack = [part]
        while stack:
            item = stack.pop()
            assert type(item) in (dict, list, str, int, float, bool)
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)


@pytest.mark.parametrize("yaml_text, key, expected", [
    ("command: echo hi", "Args", ["echo", "hi"]),
    ("command: [\"sh\", \"-c\", \"echo 'a b'\"]", "Args", ["sh", "-c", "echo 'a b'"]),
    ("command: sh -c 'echo \"a b\"; exit 3'", "Args", ["sh", "-c", 'echo "a b"; exit 3']),
    ("command: [echo, 1, 2.5]", "Args", ["echo", "1", "2.5"]),
    ("entrypoint: /init --flag", "Command", ["/init", "--flag"]),
    ("entrypoint: [/init]", "Command", ["/init"]),
    ("user: nobody", "User", "nobody"),
    ("user: 1000", "User", "1000"),
    ("user: '1000:1000'", "User", "1000:1000"),
    ("working_dir: /srv", "Dir", "/srv"),
    ("hostname: box", "Hostname", "box"),
    ("stop_signal: SIGINT", "StopSignal", "SIGINT"),
    ("stop_grace_period: 1m30s", "StopGracePeriod", 90_000_000_000),
    ("stop_grace_period: 500ms", "StopGracePeriod", 500_000_000),
    ("init: true", "Init", True),
    ("init: false", "Init", False),
    ("read_only: true", "ReadOnly", True),
    ("tty: true", "TTY", True),
    ("stdin_open: true", "OpenStdin", True),
    ("isolation: default", "Isolation", "default"),
    ("group_add: [audio, 44]", "Groups", ["audio", "44"]),
    ("sysctls:\n  net.core.somaxconn: 1024\n  net.ipv4.tcp_syncookies: 0", "Sysctls",
     {"net.core.somaxconn": "1024", "net.ipv4.tcp_syncookies": "0"}),
    ("sysctls: [net.core.somaxconn=1024]", "Sysctls", {"net.core.somaxconn": "1024"}),
    ("extra_hosts: ['db:10.0.0.2', 'v6host:::1']", "Hosts", ["10.0.0.2 db", "::1 v6host"]),
    ("extra_hosts: ['db=10.0.0.2']", "Hosts", ["10.0.0.2 db"]),
    ("extra_hosts:\n  db: 10.0.0.2\n  multi: [10.0.0.3, 10.0.0.4]", "Hosts", ["10.0.0.2 db", "10.0.0.3 multi", "10.0.0.4 multi"]),
    ("dns: 8.8.8.8", "DNSConfig", {"Nameservers": ["8.8.8.8"]}),
    ("dns: [1.1.1.1, '2001:db8::1']\ndns_search: example.com\ndns_opt: [use-vc]", "DNSConfig",
     {"Nameservers": ["1.1.1.1", "2001:db8::1"], "Search": ["example.com"], "Options": ["use-vc"]}),
    ("cap_add: [net_admin, CAP_SYS_TIME]\ncap_drop: [MKNOD, NET_ADMIN]", None,
     {"CapabilityAdd": ["CAP_NET_ADMIN", "CAP_SYS_TIME"], "CapabilityDrop": ["CAP_MKNOD"]}),
    ("cap_add: [ALL, NET_ADMIN]\ncap_drop: [all]", None, {"CapabilityAdd": ["ALL"]}),
    ("ulimits:\n  nproc: 65535\n  nofile:\n    soft: 20000\n    hard: 40000", "Ulimits",
     [{"Name": "nofile", "Soft": 20000, "Hard": 40000}, {"Name": "nproc", "Soft": 65535, "Hard": 65535}]),
    ("labels:\n  com.example.a: x\n  b: 2\n  c: true", "Labels", {"com.example.a": "x", "b": "2", "c": "true", **NS}),
    ("labels: [a=1, b, c=x=y]", "Labels", {"a": "1", "b": "", "c": "x=y", **NS}),
])
def test_container_keys(tmp_path, yaml_text, key, expected):
    container = container_of(tmp_path, yaml_text)
    if key is None:
        for k, v in expected.items():
            assert container[k] == v
        assert set(expected) >= {k for k in ("CapabilityAdd", "CapabilityDrop") if k in container}
    else:
        assert container[key] == expected


def test_environment_map_list_and_resolution(tmp_path):
    c = container_of(tmp_path, """
        environment:
          B: "2"
          A: 1
          FLAG: yes
          FROM_SHELL:
          EMPTY_BUT_SET_IN_SHELL: ""
          NOT_IN_SHELL:
    """, env={"FROM_SHELL": "shell", "EMPTY_BUT_SET_IN_SHELL": "s2"})
    assert c["Env"] == ["A=1", "B=2", "EMPTY_BUT_SET_IN_SHELL=s2", "FLAG=true", "FROM_SHELL=shell", "NOT_IN_SHELL"]
    c = container_of(tmp_path, "environment: [X=1, Y=, FROM_SHELL, Z=a=b]", env={"FROM_SHELL": "v"})
    assert c["Env"] == ["FROM_SHELL=v", "X=1", "Y=", "Z=a=b"]


def test_env_file_then_environment(tmp_path):
    write(tmp_path, "a.env", "A=from-a\nSHARED=a\n# comment\nPASS\n")
    write(tmp_path, "b.env", 'SHARED=b\nQUOTED="q"\n')
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sub/c.env", "C=c\n")
    c = container_of(tmp_path, """
        env_file: [a.env, b.env, ./sub/c.env, {path: missing.env, required: false}]
        environment:
          A: override
    """, env={"PASS": "through"})
    assert c["Env"] == ["A=override", "C=c", "PASS=through", 'QUOTED="q"', "SHARED=b"]
    c = container_of(tmp_path, "env_file: a.env")
    assert "A=from-a" in c["Env"]


def test_missing_env_file_is_an_error_at_its_line(tmp_path):
    with pytest.raises(ComposeError) as exc:
        plan_of(tmp_path, "env_file:\n  - nothere.env")
    assert str(exc.value).startswith(f"{tmp_path}/stack.yml:5: services.web.env_file[0]: env file \"{tmp_path}/nothere.env\" does not exist")
    write(tmp_path, "bad.env", "OK=1\nBAD KEY=2\n")
    with pytest.raises(ComposeError, match="line 2"):
        plan_of(tmp_path, "env_file: bad.env")


def test_healthcheck(tmp_path):
    c = container_of(tmp_path, """
        healthcheck:
          test: curl -f http://localhost
          interval: 30s
          timeout: 10s
          retries: 3
          start_period: 1m
          start_interval: 2s
    """)
    assert c["HealthCheck"] == {
        "Test": ["CMD-SHELL", "curl -f http://localhost"],
        "Interval": 30_000_000_000, "Timeout": 10_000_000_000, "Retries": 3,
        "StartPeriod": 60_000_000_000, "StartInterval": 2_000_000_000,
    }
    assert container_of(tmp_path, "healthcheck:\n  test: [CMD, /check, --fast]")["HealthCheck"] == {"Test": ["CMD", "/check", "--fast"]}
    assert container_of(tmp_path, "healthcheck:\n  disable: true")["HealthCheck"] == {"Test": ["NONE"]}
    assert container_of(tmp_path, "healthcheck:\n  test: [NONE]\n  disable: true")["HealthCheck"] == {"Test": ["NONE"]}
    with pytest.raises(ComposeError) as exc:
        plan_of(tmp_path, "healthcheck:\n  test: [CMD, x]\n  disable: true")
    assert str(exc.value).endswith("stack.yml:6: services.web.healthcheck.disable: test and disable cannot be set at the same time")


def test_deploy_mode_and_replicas(tmp_path):
    assert spec_of(tmp_path, "deploy:\n  replicas: 3")["Mode"] == {"Replicated": {"Replicas": 3}}
    assert spec_of(tmp_path, "deploy:\n  replicas: 0")["Mode"] == {"Replicated": {"Replicas": 0}}
    assert spec_of(tmp_path, "deploy:\n  mode: replicated")["Mode"] == {"Replicated": {"Replicas": 1}}
    assert spec_of(tmp_path, "deploy:\n  mode: global")["Mode"] == {"Global": {}}
    assert spec_of(tmp_path, "deploy:\n  mode: global-job")["Mode"] == {"GlobalJob": {}}
    assert spec_of(tmp_path, "deploy:\n  mode: replicated-job\n  replicas: 4")["Mode"] == \
        {"ReplicatedJob": {"MaxConcurrent": 4, "TotalCompletions": 4}}
    with pytest.raises(ComposeError) as exc:
        plan_of(tmp_path, "deploy:\n  mode: global\n  replicas: 2")
    assert str(exc.value).endswith("stack.yml:6: services.web.deploy.replicas: replicas can only be used with replicated modes, not global")
    with pytest.raises(ComposeError, match="max_replicas_per_node can only be used"):
        plan_of(tmp_path, "deploy:\n  mode: global\n  placement:\n    max_replicas_per_node: 1")


def test_deploy_labels_go_on_the_service(tmp_path):
    spec = spec_of(tmp_path, "labels: [c=1]\ndeploy:\n  labels:\n    s: '1'\n    com.docker.stack.namespace: spoof")
    assert spec["Labels"] == {"s": "1", **NS, "com.docker.stack.image": "busybox:latest"}
    assert spec["TaskTemplate"]["ContainerSpec"]["Labels"] == {"c": "1", **NS}
    assert spec_of(tmp_path, "deploy:\n  labels: [a=b]")["Labels"]["a"] == "b"


def test_resources(tmp_path):
    task = spec_of(tmp_path, """
        deploy:
          resources:
            limits:
              cpus: '0.5'
              memory: 64M
              pids: 100
            reservations:
              cpus: 0.25
              memory: 512k
              generic_resources:
                - discrete_resource_spec:
                    kind: gpu
                    value: 2
    """)["TaskTemplate"]
    assert task["Resources"] == {
        "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 1024 * 1024, "Pids": 100},
        "Reservations": {"NanoCPUs": 250_000_000, "MemoryBytes": 512 * 1024,
                         "GenericResources": [{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 2}}]},
    }
    task = spec_of(tmp_path, "deploy:\n  resources:\n    limits:\n      memory: 1g\n      cpus: 2")["TaskTemplate"]
    assert task["Resources"] == {"Limits": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 1 << 30}}


def test_restart_policy(tmp_path):
    task = spec_of(tmp_path, """
        deploy:
          restart_policy:
            condition: on-failure
            delay: 5s
            max_attempts: 3
            window: 2m
    """)["TaskTemplate"]
    assert task["RestartPolicy"] == {"Condition": "on-failure", "Delay": 5_000_000_000, "MaxAttempts": 3, "Window": 120_000_000_000}
    assert spec_of(tmp_path, "deploy:\n  restart_policy:\n    condition: none")["TaskTemplate"]["RestartPolicy"] == {"Condition": "none"}


@pytest.mark.parametrize("restart, policy", [
    ("always", {"Condition": "any"}),
    ("unless-stopped", {"Condition": "any"}),
    ('"no"', {"Condition": "none"}),
    ("on-failure", {"Condition": "on-failure"}),
    ("on-failure:5", {"Condition": "on-failure", "MaxAttempts": 5}),
])
def test_legacy_restart_is_the_fallback_policy(tmp_path, restart, policy):
    plan = plan_of(tmp_path, f"restart: {restart}")
    assert plan.services[0]["TaskTemplate"]["RestartPolicy"] == policy
    assert plan.warnings == ["Ignoring unsupported options: restart"]
    # deploy.restart_policy wins when both are given
    plan = plan_of(tmp_path, f"restart: {restart}\ndeploy:\n  restart_policy:\n    condition: any")
    assert plan.services[0]["TaskTemplate"]["RestartPolicy"] == {"Condition": "any"}


def test_bad_legacy_restart(tmp_path):
    with pytest.raises(ComposeError, match=r"stack.yml:4: services.web.restart: invalid restart policy \"sometimes\""):
        plan_of(tmp_path, "restart: sometimes")


def test_placement(tmp_path):
    task = spec_of(tmp_path, """
        deploy:
          placement:
            constraints: [node.role == manager, node.labels.zone == a]
            preferences:
              - spread: node.labels.zone
              - spread: node.labels.rack
            max_replicas_per_node: 2
    """)["TaskTemplate"]
    assert task["Placement"] == {
        "Constraints": ["node.role == manager", "node.labels.zone == a"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}, {"Spread": {"SpreadDescriptor": "node.labels.rack"}}],
        "MaxReplicas": 2,
    }


def test_update_and_rollback_config(tmp_path):
    spec = spec_of(tmp_path, """
        deploy:
          update_config:
            parallelism: 2
            delay: 10s
            failure_action: rollback
            monitor: 1m
            max_failure_ratio: 0.3
            order: start-first
          rollback_config:
            failure_action: pause
    """)
    assert spec["UpdateConfig"] == {
        "Parallelism": 2, "Delay": 10_000_000_000, "FailureAction": "rollback",
        "Monitor": 60_000_000_000, "MaxFailureRatio": 0.3, "Order": "start-first",
    }
    assert spec["RollbackConfig"] == {"Parallelism": 1, "FailureAction": "pause"}
    assert spec_of(tmp_path, "deploy:\n  update_config:\n    parallelism: 0")["UpdateConfig"] == {"Parallelism": 0}


def test_ports_short_and_long(tmp_path):
    spec = spec_of(tmp_path, """
        ports:
          - 3000
          - "8080:80"
          - "53:53/udp"
          - "9000-9001:7000-7001"
          - "127.0.0.1::6000"
          - target: 443
            published: 8443
            protocol: tcp
            mode: host
            name: https
          - target: 9999
    """)
    assert spec["EndpointSpec"] == {"Ports": [
        {"Protocol": "tcp", "TargetPort": 3000, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 6000, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 9999, "PublishMode": "ingress"},
        {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 443, "PublishedPort": 8443, "PublishMode": "host", "Name": "https"},
        {"Protocol": "tcp", "TargetPort": 7000, "PublishedPort": 9000, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 7001, "PublishedPort": 9001, "PublishMode": "ingress"},
    ]}


def test_endpoint_mode(tmp_path):
    assert spec_of(tmp_path, "deploy:\n  endpoint_mode: dnsrr")["EndpointSpec"] == {"Mode": "dnsrr"}
    spec = spec_of(tmp_path, "deploy:\n  endpoint_mode: dnsrr\nports:\n  - {target: 80, published: 80, mode: host}")
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    with pytest.raises(ComposeError, match=r"services.web.deploy.endpoint_mode: dnsrr cannot be used with ports published in ingress mode"):
        plan_of(tmp_path, "deploy:\n  endpoint_mode: dnsrr\nports: ['80:80']")
    assert spec_of(tmp_path, "deploy:\n  endpoint_mode: vip")["EndpointSpec"] == {"Mode": "vip"}


def test_networks_list_map_aliases_and_names(tmp_path):
    extra = """
        networks:
          front:
          back:
            driver: overlay
            driver_opts:
              encrypted: ""
              com.docker.network.driver.mtu: 1400
            attachable: true
            internal: true
            labels: [tier=back]
            ipam:
              driver: default
              config:
                - subnet: 10.5.0.0/24
                  gateway: 10.5.0.1
                  ip_range: 10.5.0.128/25
                  aux_addresses: {router: 10.5.0.2}
          named:
            name: custom-net
          ext:
            external: true
          ext_named:
            external:
              name: real-ext
          unused:
    """
    plan = plan_of(tmp_path, """
        networks:
          front:
            aliases: [www, web]
          back:
            driver_opts: {opt: 1}
          named:
          ext:
          ext_named:
    """, extra)
    assert plan.services[0]["TaskTemplate"]["Networks"] == [
        {"Target": "custom-net", "Aliases": ["web"]},
        {"Target": "ext", "Aliases": ["web"]},
        {"Target": "real-ext", "Aliases": ["web"]},
        {"Target": "st_back", "Aliases": ["web"], "DriverOpts": {"opt": "1"}},
        {"Target": "st_front", "Aliases": ["www", "web"]},
    ]
    assert plan.networks == {
        "st_back": {
            "Name": "st_back", "Labels": {"tier": "back", **NS}, "Driver": "overlay",
            "Options": {"encrypted": "", "com.docker.network.driver.mtu": "1400"},
            "Internal": True, "Attachable": True,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.5.0.0/24", "IPRange": "10.5.0.128/25",
                                                       "Gateway": "10.5.0.1", "AuxiliaryAddresses": {"router": "10.5.0.2"}}]},
            "External": False,
        },
        "custom-net": {"Name": "custom-net", "Labels": NS, "Driver": "overlay", "External": False},
        "ext": {"Name": "ext", "External": True},
        "real-ext": {"Name": "real-ext", "External": True},
        "st_front": {"Name": "st_front", "Labels": NS, "Driver": "overlay", "External": False},
    }
    plan = plan_of(tmp_path, "networks: [front]", extra)
    assert plan.services[0]["TaskTemplate"]["Networks"] == [{"Target": "st_front", "Aliases": ["web"]}]
    assert list(plan.networks) == ["st_front"]


def test_default_network_can_be_customised(tmp_path):
    plan = plan_of(tmp_path, "", "networks:\n  default:\n    driver_opts: {encrypted: 'true'}\n")
    assert plan.networks == {"st_default": {"Name": "st_default", "Labels": NS, "Driver": "overlay",
                                            "Options": {"encrypted": "true"}, "External": False}}


def test_undefined_network(tmp_path):
    with pytest.raises(ComposeError) as exc:
        plan_of(tmp_path, "networks:\n  - default\n  - nope")
    assert str(exc.value) == f'{tmp_path}/stack.yml:6: services.web.networks.nope: undefined network "nope" (declare it under the top-level networks key)'


def test_secrets_and_configs(tmp_path):
    write(tmp_path, "pw.txt", "hunter2")
    plan = plan_of(tmp_path, """
        secrets:
          - db_pw
          - source: tls_key
            target: server.key
            uid: '103'
            gid: 104
            mode: 0400
        configs:
          - source: site
            target: /etc/nginx/nginx.conf
            mode: "0440"
          - inline
    """, """
        secrets:
          db_pw:
            file: ./pw.txt
            labels: {kind: password}
          tls_key:
            external: true
          from_env:
            environment: TOKEN
          named:
            name: fixed-name
            file: /abs/secret
          templated:
            file: pw.txt
            template_driver: golang
        configs:
          site:
            file: nginx.conf
          inline:
            content: |
              hello
          ext:
            external:
              name: shared-config
    """, env={"TOKEN": "t0k"})
    container = plan.services[0]["TaskTemplate"]["ContainerSpec"]
    assert container["Secrets"] == [
        {"File": {"Name": "db_pw", "UID": "0", "GID": "0", "Mode": 0o444}, "SecretName": "st_db_pw"},
        {"File": {"Name": "server.key", "UID": "103", "GID": "104", "Mode": 0o400}, "SecretName": "tls_key"},
    ]
    assert container["Configs"] == [
        {"File": {"Name": "inline", "UID": "0", "GID": "0", "Mode": 0o444}, "ConfigName": "st_inline"},
        {"File": {"Name": "/etc/nginx/nginx.conf", "UID": "0", "GID": "0", "Mode": 0o440}, "ConfigName": "st_site"},
    ]
    assert plan.secrets == {
        "st_db_pw": {"Name": "st_db_pw", "Labels": {"kind": "password", **NS}, "File": str(tmp_path / "pw.txt"), "External": False},
        "tls_key": {"Name": "tls_key", "External": True},
        "st_from_env": {"Name": "st_from_env", "Labels": NS, "Data": base64.b64encode(b"t0k").decode(), "External": False},
        "fixed-name": {"Name": "fixed-name", "Labels": NS, "File": "/abs/secret", "External": False},
        "st_templated": {"Name": "st_templated", "Labels": NS, "File": str(tmp_path / "pw.txt"),
                         "Templating": {"Name": "golang"}, "External": False},
    }
    assert plan.configs == {
        "st_site": {"Name": "st_site", "Labels": NS, "File": str(tmp_path / "nginx.conf"), "External": False},
        "st_inline": {"Name": "st_inline", "Labels": NS, "Data": base64.b64encode(b"hello\n").decode(), "External": False},
        "shared-config": {"Name": "shared-config", "External": True},
    }


def test_undefined_secret_and_config(tmp_path):
    with pytest.raises(ComposeError) as exc:
        plan_of(tmp_path, "secrets:\n  - nope")
    assert str(exc.value) == f'{tmp_path}/stack.yml:5: services.web.secrets[0]: undefined secret "nope" (declare it under the top-level secrets key)'
    with pytest.raises(ComposeError, match=r'stack.yml:4: services.web.configs\[0\]: undefined config "c"'):
        plan_of(tmp_path, "configs: [c]")


def test_volumes(tmp_path):
    plan = plan_of(tmp_path, """
        volumes:
          - data:/var/lib/data
          - logs:/logs:ro,nocopy
          - /anon
          - ./conf:/etc/conf:ro,rshared
          - /abs/host:/host:cached
          - ~/cache:/cache
          - ext:/ext
          - type: volume
            source: data
            target: /data2
            read_only: true
            volume:
              nocopy: true
          - type: bind
            source: ../up
            target: /up
            bind:
              propagation: rslave
          - type: tmpfs
            target: /scratch
            tmpfs:
              size: 1g
              mode: 01777
          - type: volume
            target: /anon2
        tmpfs:
          - /run
          - /tmp:size=64m,mode=1777,ro
    """, """
        volumes:
          data:
          logs:
            name: shared-logs
            driver: local
            driver_opts:
              type: nfs
              o: addr=10.0.0.1
            labels: {backup: "yes"}
          ext:
            external: true
    """, env={"HOME": "/home/u"})
    assert plan.services[0]["TaskTemplate"]["ContainerSpec"]["Mounts"] == [
        {"Type": "volume", "Source": "st_data", "Target": "/var/lib/data", "VolumeOptions": {"Labels": NS}},
        {"Type": "volume", "Source": "shared-logs", "Target": "/logs", "ReadOnly": True,
         "VolumeOptions": {"NoCopy": True, "Labels": {"backup": "yes", **NS},
                           "DriverConfig": {"Name": "local", "Options": {"type": "nfs", "o": "addr=10.0.0.1"}}}},
        {"Type": "volume", "Target": "/anon"},
        {"Type": "bind", "Source": str(tmp_path / "conf"), "Target": "/etc/conf", "ReadOnly": True,
         "BindOptions": {"Propagation": "rshared"}},
        {"Type": "bind", "Source": "/abs/host", "Target": "/host", "Consistency": "cached"},
        {"Type": "bind", "Source": "/home/u/cache", "Target": "/cache"},
        {"Type": "volume", "Source": "ext", "Target": "/ext"},
        {"Type": "volume", "Source": "st_data", "Target": "/data2", "ReadOnly": True,
         "VolumeOptions": {"NoCopy": True, "Labels": NS}},
        {"Type": "bind", "Source": str(tmp_path.parent / "up"), "Target": "/up", "BindOptions": {"Propagation": "rslave"}},
        {"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1 << 30, "Mode": 0o1777}},
        {"Type": "volume", "Target": "/anon2"},
        {"Type": "tmpfs", "Target": "/run"},
        {"Type": "tmpfs", "Target": "/tmp", "ReadOnly": True, "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1777}},
    ]


def test_undefined_volume(tmp_path):
    with pytest.raises(ComposeError) as exc:
        plan_of(tmp_path, "volumes:\n  - /a:/a\n  - data:/data")
    assert str(exc.value).startswith(f'{tmp_path}/stack.yml:6: services.web.volumes[1]: undefined volume "data"')


def test_external_volume_with_driver_is_refused(tmp_path):
    with pytest.raises(ComposeError, match='an external volume cannot set "driver"'):
        plan_of(tmp_path, "volumes: ['v:/v']", "volumes:\n  v:\n    external: true\n    driver: local\n")


def test_logging(tmp_path):
    task = spec_of(tmp_path, "logging:\n  driver: json-file\n  options:\n    max-size: 10m\n    max-file: 3")["TaskTemplate"]
    assert task["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "3"}}


def test_services_are_sorted_and_scoped(tmp_path):
    path = write(tmp_path, "s.yml", """
        services:
          zeta: {image: z}
          alpha: {image: a}
          mid-dle: {image: m}
    """)
    plan = load_stack([path], "app", {})
    assert [s["Name"] for s in plan.services] == ["app_alpha", "app_mid-dle", "app_zeta"]
    assert all(s["Labels"]["com.docker.stack.namespace"] == "app" for s in plan.services)


def test_hello_example_stack():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    plan = load_stack([str(root / "stacks" / "hello.yml")], "hello", {})
    assert plan.warnings == []
    by_name = {s["Name"]: s for s in plan.services}
    assert set(by_name) == {"hello_web", "hello_worker"}
    web = by_name["hello_web"]
    assert web["Mode"] == {"Replicated": {"Replicas": 3}}
    assert by_name["hello_worker"]["Mode"] == {"Replicated": {"Replicas": 1}}
    container = web["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == "busybox:latest"
    assert container["Args"][:2] == ["sh", "-c"]
    assert "$(hostname)" in container["Args"][2]
    assert container["Env"] == ["GREETING=hello"]
    assert by_name["hello_worker"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["ROLE=worker"]
