"""Sysctls, Hosts, DNSConfig, Isolation (ContainerSpec) and LogDriver (TaskSpec): the wire
format, compose -> spec -> decoded dataclass, the managers' validation, the CLI flags, and what
a node makes of them (ContainerConfig, the overlay's resolv.conf, the DNS forwarder)."""
from __future__ import annotations

import asyncio
import copy
import textwrap

import pytest

from api import codec
from api.logdriver import LogSettings, log_settings
from api.objects import DNSConfig, Driver, ServiceSpec, Task, TaskSpec
from api.sysctls import check_sysctl
from cli.compose import load_stack
from cli.runopts import RunFlags, RunUpdateFlags, apply_create, apply_update
from manager.validation import SpecError, validate_service_spec
from overlay import dnsmsg
from overlay.dnsserver import DnsServer
from tests.overlay.fabric import FakeResolver
from worker.executor import TaskRejected, surroundings
from worker.networks import resolv_conf as overlay_resolv_conf
from worker.runtime import sysctl as runtime_sysctl

FULL = {
    "Name": "web", "Mode": {"Replicated": {"Replicas": 1}},
    "TaskTemplate": {
        "ContainerSpec": {
            "Image": "busybox",
            "Sysctls": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"},
            "Hosts": ["10.0.0.2 db", "2001:db8::1 v6host alias"],
            "DNSConfig": {"Nameservers": ["10.0.0.53"], "Search": ["example.test"], "Options": ["ndots:3"]},
            "Isolation": "default",
        },
        "LogDriver": {"Name": "json-file", "Options": {"max-size": "64k", "max-file": "2"}},
    },
}


def with_change(path: str, value) -> dict:
    """FULL with the value at a dotted path of TaskTemplate replaced."""
    spec = copy.deepcopy(FULL)
    node = spec["TaskTemplate"]
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return spec


# --- wire format ------------------------------------------------------------------------------

def test_codec_round_trip_and_field_names():
    spec = codec.decode(ServiceSpec, FULL)
    cs = spec.task_template.container_spec
    assert cs.sysctls == {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"}
    assert cs.hosts == ["10.0.0.2 db", "2001:db8::1 v6host alias"]
    assert cs.dns_config == DNSConfig(["10.0.0.53"], ["example.test"], ["ndots:3"])
    assert cs.isolation == "default"
    assert spec.task_template.log_driver == Driver("json-file", {"max-size": "64k", "max-file": "2"})
    assert codec.encode(spec) == FULL
    empty = codec.encode(ServiceSpec(name="x"))["TaskTemplate"]
    assert empty == {"ContainerSpec": {}}, "unset fields stay off the wire (omitempty)"


@pytest.mark.parametrize("path, value, message", [
    ("ContainerSpec.DNSConfig", {"Servers": ["1.1.1.1"]}, "TaskTemplate.ContainerSpec.DNSConfig.Servers: unknown field"),
    ("ContainerSpec.Sysctls", {"net.core.somaxconn": 1024}, r"Sysctls.net.core.somaxconn: must be a string, got 1024"),
    ("ContainerSpec.Hosts", "10.0.0.2 db", "TaskTemplate.ContainerSpec.Hosts: must be a list"),
    ("LogDriver", {"Name": "json-file", "Opts": {}}, "TaskTemplate.LogDriver.Opts: unknown field"),
])
def test_codec_refuses_malformed_fields_naming_them(path, value, message):
    with pytest.raises(codec.DecodeError, match=message):
        codec.decode(ServiceSpec, with_change(path, value))


# --- compose -> spec -> dataclass -----------------------------------------------------------------

def decoded_from_compose(tmp_path, service_yaml: str) -> TaskSpec:
    text = "services:\n  web:\n    image: busybox\n" + textwrap.indent(textwrap.dedent(service_yaml).strip("\n"), "    ")
    (tmp_path / "stack.yml").write_text(text + "\n")
    (plan,) = load_stack([str(tmp_path / "stack.yml")], "st", {}).services
    spec = codec.decode(ServiceSpec, plan)  # the control API's decoder: refuses unknown fields
    validate_service_spec(spec)
    return spec.task_template


def test_compose_sysctls(tmp_path):
    tt = decoded_from_compose(tmp_path, "sysctls:\n  net.core.somaxconn: 1024\n  kernel.shmmax: 68719476736")
    assert tt.container_spec.sysctls == {"net.core.somaxconn": "1024", "kernel.shmmax": "68719476736"}
    tt = decoded_from_compose(tmp_path, "sysctls: [fs.mqueue.msg_max=20]")
    assert tt.container_spec.sysctls == {"fs.mqueue.msg_max": "20"}


def test_compose_extra_hosts(tmp_path):
    tt = decoded_from_compose(tmp_path, "extra_hosts: ['db:10.0.0.2', 'v6:::1', 'api=10.0.0.3']")
    assert tt.container_spec.hosts == ["10.0.0.2 db", "::1 v6", "10.0.0.3 api"]


def test_compose_dns(tmp_path):
    tt = decoded_from_compose(tmp_path, "dns: [10.0.0.53, 1.1.1.1]\ndns_search: example.test\ndns_opt: [ndots:2, use-vc]")
    assert tt.container_spec.dns_config == DNSConfig(["10.0.0.53", "1.1.1.1"], ["example.test"], ["ndots:2", "use-vc"])


def test_compose_isolation(tmp_path):
    assert decoded_from_compose(tmp_path, "isolation: default").container_spec.isolation == "default"
    with pytest.raises(SpecError, match=r"^TaskTemplate.ContainerSpec.Isolation: only default is supported on Linux, got 'hyperv'$"):
        decoded_from_compose(tmp_path, "isolation: hyperv")


def test_compose_logging(tmp_path):
    tt = decoded_from_compose(tmp_path, "logging:\n  driver: local\n  options:\n    max-size: 10m\n    max-file: 3")
    assert tt.log_driver == Driver("local", {"max-size": "10m", "max-file": "3"})
    tt = decoded_from_compose(tmp_path, "logging:\n  options:\n    max-size: 1m")  # driver is optional in compose
    assert tt.log_driver == Driver("", {"max-size": "1m"}) and log_settings(tt.log_driver).max_size == 1 << 20
    with pytest.raises(SpecError, match=r"^TaskTemplate.LogDriver.Name: log driver 'syslog' is not supported"):
        decoded_from_compose(tmp_path, "logging:\n  driver: syslog")


# --- validation ----------------------------------------------------------------------------------

def test_full_spec_is_valid():
    validate_service_spec(codec.decode(ServiceSpec, FULL))


@pytest.mark.parametrize("path, value, message", [
    ("ContainerSpec.Sysctls", {"kernel.hostname": "x"}, "ContainerSpec.Sysctls: kernel.hostname is not a namespaced sysctl"),
    ("ContainerSpec.Sysctls", {"vm.swappiness": "1"}, "vm.swappiness is not a namespaced sysctl"),
    ("ContainerSpec.Sysctls", {"net/ipv4/ip_forward": "1"}, "'net/ipv4/ip_forward' is not a sysctl name"),
    ("ContainerSpec.Sysctls", {"net.ipv4.ip_forward": "1\nkernel.x"}, "net.ipv4.ip_forward: the value must be one line"),
    ("ContainerSpec.Sysctls", {"net.ipv4.conf.eth0.rp_filter": "2"},
     "net.ipv4.conf.eth0.rp_filter: eth0 is attached after the task starts, so it cannot be set this way; "
     "net.ipv4.conf.default.rp_filter applies to it"),
    ("ContainerSpec.Hosts", ["10.0.0.2 db", "db 10.0.0.2"], r"ContainerSpec.Hosts\[1\]: 'db' is not an IP address"),
    ("ContainerSpec.Hosts", ["10.0.0.2"], r"ContainerSpec.Hosts\[0\]: '10.0.0.2' must be \"IP HOSTNAME"),
    ("ContainerSpec.Hosts", ["10.0.0.2 d#b"], r"ContainerSpec.Hosts\[0\]: 'd#b' is not a host name"),
    ("ContainerSpec.DNSConfig", {"Nameservers": ["dns.example"]}, r"DNSConfig.Nameservers\[0\]: 'dns.example' is not an IP"),
    ("ContainerSpec.DNSConfig", {"Search": ["a b"]}, r"DNSConfig.Search\[0\]: 'a b' must be one word"),
    ("ContainerSpec.DNSConfig", {"Options": [""]}, r"DNSConfig.Options\[0\]"),
    ("ContainerSpec.Isolation", "process", "ContainerSpec.Isolation: only default is supported on Linux, got 'process'"),
    ("LogDriver", {"Name": "fluentd"}, "LogDriver.Name: log driver 'fluentd' is not supported; use one of json-file, local, none"),
    ("LogDriver", {"Name": "json-file", "Options": {"max-size": "big"}}, "LogDriver.Options.max-size: invalid size 'big'"),
    ("LogDriver", {"Name": "json-file", "Options": {"max-size": "1k"}}, "LogDriver.Options.max-size: must be at least 4k"),
    ("LogDriver", {"Name": "local", "Options": {"max-file": "0"}}, "LogDriver.Options.max-file: must be a whole number"),
    ("LogDriver", {"Name": "local", "Options": {"max-file": "x"}}, "LogDriver.Options.max-file"),
    ("LogDriver", {"Name": "json-file", "Options": {"compress": "true"}}, "LogDriver.Options.compress: not supported"),
    ("LogDriver", {"Name": "none", "Options": {"max-size": "1m"}}, "LogDriver.Options.max-size: the none log driver takes no options"),
])
def test_validation_names_the_field(path, value, message):
    with pytest.raises(SpecError, match=message):
        validate_service_spec(codec.decode(ServiceSpec, with_change(path, value)))


@pytest.mark.parametrize("key", ["kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                                 "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced", "fs.mqueue.msg_max",
                                 "net.ipv4.ip_forward", "net.core.somaxconn"])
def test_namespaced_sysctls_are_allowed_by_cluster_and_runtime(key):
    check_sysctl(key, "1")
    assert runtime_sysctl.problem(key, "1", {"ipc", "network", "uts"}) is None


@pytest.mark.parametrize("key", ["kernel.hostname", "kernel.panic", "vm.swappiness", "fs.file-max", "kernel.shm",
                                 "net", "net..x", "../etc", "net.ipv4/../x"])
def test_other_sysctls_are_refused_by_cluster_and_runtime(key):
    with pytest.raises(ValueError):
        check_sysctl(key, "1")
    assert runtime_sysctl.problem(key, "1", {"ipc", "network", "uts"})


def test_runtime_wants_the_namespace_a_sysctl_belongs_to():
    assert "network namespace" in runtime_sysctl.problem("net.ipv4.ip_forward", "1", {"ipc"})
    assert "ipc namespace" in runtime_sysctl.problem("kernel.shmmax", "1", {"network"})


def test_log_settings():
    assert log_settings(None) == LogSettings()
    assert log_settings(Driver("json-file", {"max-size": "10m", "max-file": "5"})) == LogSettings(True, 10 << 20, 5)
    assert log_settings(Driver("local", {})) == LogSettings()
    assert log_settings(Driver("json-file", {"max-size": "-1"})).max_size > 1 << 60
    assert log_settings(Driver("none")) == LogSettings(keep=False)


# --- CLI flags -----------------------------------------------------------------------------------

def test_create_flags_build_the_docker_shape():
    spec = apply_create({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}, RunFlags(
        sysctl=["net.ipv4.ip_forward=1", "kernel.shmmax=123456789"], host=["db:10.0.0.2", "v6host:2001:db8::1"],
        dns=["10.0.0.53"], dns_search=["example.test"], dns_option=["ndots:3"], log_opt=["max-size=64k", "max-file=2"],
        isolation="default"))
    tt = spec["TaskTemplate"]
    assert tt["ContainerSpec"] == {
        "Image": "busybox", "Sysctls": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"},
        "Hosts": ["10.0.0.2 db", "2001:db8::1 v6host"],
        "DNSConfig": {"Nameservers": ["10.0.0.53"], "Search": ["example.test"], "Options": ["ndots:3"]},
        "Isolation": "default"}
    assert tt["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "64k", "max-file": "2"}}
    validate_service_spec(codec.decode(ServiceSpec, {**spec, "Mode": {"Replicated": {"Replicas": 1}}}))
    assert apply_create({}, RunFlags(log_driver="none"))["TaskTemplate"]["LogDriver"] == {"Name": "none"}


def test_update_flags_add_and_remove():
    spec = apply_update(copy.deepcopy(FULL), RunUpdateFlags(
        sysctl_add=["net.core.somaxconn=512"], sysctl_rm=["kernel.shmmax"],
        host_add=["cache:10.0.0.9", "db:10.0.0.2"], host_rm=["v6host"],
        dns_add=["10.0.0.54"], dns_rm=["10.0.0.53"], dns_search_rm=["example.test"],
        dns_option_add=["use-vc"], log_opt=["max-file=4"], isolation=""))
    cs = spec["TaskTemplate"]["ContainerSpec"]
    assert cs["Sysctls"] == {"net.ipv4.ip_forward": "1", "net.core.somaxconn": "512"}
    assert cs["Hosts"] == ["10.0.0.2 db", "2001:db8::1 alias", "10.0.0.9 cache"]
    assert cs["DNSConfig"] == {"Nameservers": ["10.0.0.54"], "Options": ["ndots:3", "use-vc"]}
    assert "Isolation" not in cs
    # --log-opt alone changes the current driver's options (Docker would ignore it)
    assert spec["TaskTemplate"]["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "64k", "max-file": "4"}}
    spec = apply_update(spec, RunUpdateFlags(log_driver="local", host_rm=["db:10.0.0.3"]))
    assert spec["TaskTemplate"]["LogDriver"] == {"Name": "local"}, "a new driver starts from its own options"
    assert spec["TaskTemplate"]["ContainerSpec"]["Hosts"][0] == "10.0.0.2 db", "HOST:IP removes only that address"
    spec = apply_update(spec, RunUpdateFlags(host_rm=["db", "alias", "cache"], sysctl_rm=["net.ipv4.ip_forward",
                                                                                          "net.core.somaxconn"]))
    assert "Hosts" not in spec["TaskTemplate"]["ContainerSpec"] and "Sysctls" not in spec["TaskTemplate"]["ContainerSpec"]


@pytest.mark.parametrize("flags, message", [
    (RunFlags(sysctl=["kernel.hostname=x"]), "^--sysctl: kernel.hostname is not a namespaced sysctl"),
    (RunFlags(sysctl=["net.ipv4.ip_forward"]), "^--sysctl: 'net.ipv4.ip_forward' must be KEY=VALUE"),
    (RunFlags(host=["10.0.0.2"]), "^--host: '10.0.0.2' must be HOST:IP"),
    (RunFlags(host=["db:nowhere"]), "^--host: 'nowhere' in 'db:nowhere' is not an IP address"),
    (RunFlags(dns=["dns.example"]), "^--dns: 'dns.example' is not an IP address"),
    (RunFlags(dns_search=["a b"]), "^--dns-search: 'a b' is not a domain name"),
    (RunFlags(dns_option=["a b"]), "^--dns-option: 'a b' must be one resolver option"),
    (RunFlags(isolation="hyperv"), "^--isolation: only default is supported on Linux, got 'hyperv'$"),
    (RunFlags(log_driver="syslog"), "^--log-driver: log driver 'syslog' is not supported; use one of json-file, local, none$"),
    (RunFlags(log_opt=["max-size=huge"]), "^--log-opt max-size: invalid size 'huge'"),
    (RunFlags(log_opt=["max-size"]), "^--log-opt: 'max-size' must be KEY=VALUE"),
    (RunFlags(log_driver="none", log_opt=["max-file=2"]), "^--log-opt max-file: the none log driver takes no options"),
])
def test_bad_create_flags_name_the_flag(flags, message):
    with pytest.raises(ValueError, match=message) as exc:
        apply_create({}, flags)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("flags, message", [
    (RunUpdateFlags(sysctl_add=["vm.swappiness=1"]), "^--sysctl-add: vm.swappiness is not a namespaced"),
    (RunUpdateFlags(host_add=["db"]), "^--host-add: 'db' must be HOST:IP"),
    (RunUpdateFlags(dns_add=["x"]), "^--dns-add: 'x' is not an IP address"),
    (RunUpdateFlags(dns_search_add=["-bad-"]), "^--dns-search-add: '-bad-' is not a domain name"),
    (RunUpdateFlags(log_opt=["max-file=1000"]), "^--log-opt max-file: must be a whole number from 1 to 100"),
])
def test_bad_update_flags_name_the_flag(flags, message):
    with pytest.raises(ValueError, match=message):
        apply_update(copy.deepcopy(FULL), flags)


# --- what a node makes of them ---------------------------------------------------------------------

def test_executor_maps_the_fields_to_the_runtime():
    task = Task(id="t1", spec=codec.decode(ServiceSpec, FULL).task_template)
    assert surroundings(task) == {
        "sysctls": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"},
        "extra_hosts": ["10.0.0.2 db", "2001:db8::1 v6host alias"],
        "dns_servers": ["10.0.0.53"], "dns_search": ["example.test"], "dns_options": ["ndots:3"],
        "log_driver": "json-file", "log_max_size": 64 << 10, "log_max_files": 2}
    task.spec.log_driver = Driver("none")
    out = surroundings(task)
    assert out["log_driver"] == "none" and "log_max_size" not in out
    task.spec.log_driver = Driver("gelf")
    with pytest.raises(TaskRejected, match="LogDriver.Name: log driver 'gelf' is not supported"):
        surroundings(task)
    assert surroundings(Task(id="t2"))["log_driver"] == "json-file"


def test_overlay_resolv_conf_keeps_search_and_options():
    assert overlay_resolv_conf("10.0.9.1") == "nameserver 10.0.9.1\noptions ndots:0\n"
    assert overlay_resolv_conf("10.0.9.1", ["example.test", "corp.test"], ["timeout:2"]) == (
        "search example.test corp.test\nnameserver 10.0.9.1\noptions timeout:2 ndots:0\n")
    assert overlay_resolv_conf("10.0.9.1", ["."], ["ndots:3"]) == "nameserver 10.0.9.1\noptions ndots:3\n"


def test_dns_forwarder_uses_the_containers_own_resolvers():
    """Names the node's DNS server does not know go to the container's DNSConfig.Nameservers if it
    has any (as Docker's embedded DNS), else to the node's resolvers."""
    node_resolver, own_resolver = FakeResolver({"x.test": "192.0.2.1"}), FakeResolver({"x.test": "192.0.2.2"})
    try:
        s = DnsServer(upstreams=[("127.0.0.1", node_resolver.port)])
        s.set_upstreams("n1", {"10.0.1.5": [("127.0.0.1", own_resolver.port)]})

        def ask(source: str) -> list[str]:
            reply = asyncio.run(s._resolve("n1", source, dnsmsg.build_query("x.test"), tcp=False))
            return dnsmsg.parse_a_answers(reply)[1]
        assert ask("10.0.1.5") == ["192.0.2.2"] and own_resolver.asked == ["x.test"]
        assert ask("10.0.1.6") == ["192.0.2.1"] and node_resolver.asked == ["x.test"]
        s.remove_listener("n1")  # the network goes: so do its containers' resolvers
        assert s.upstreams_for("n1", "10.0.1.5") == [("127.0.0.1", node_resolver.port)]
    finally:
        node_resolver.close()
        own_resolver.close()


def test_pretty_inspect_shows_them():
    from cli.pretty import pretty_service
    text = pretty_service({"ID": "x", "Spec": FULL})
    for line in ("SysCtls:\n kernel.shmmax: 123456789\n net.ipv4.ip_forward: 1",
                 "Log Driver:\n Name:\t\tjson-file\n LogOpts:\n  max-file:\t\t2\n  max-size:\t\t64k",
                 "Isolation: default", " Host:\t\t10.0.0.2 db", " DNS Search:\texample.test"):
        assert line in text, text
