"""Secrets and configs in the pure parts: sealing, reference completion, store rules, what a
node is sent, and the CLI's flags."""
import base64

import pytest

from api.objects import (Cluster, Config, ConfigReference, ConfigSpec, ContainerSpec, FileTarget, Secret,
                         SecretReference, SecretSpec, Service, ServiceSpec, Task, TaskSpec, TaskStatus)
from api.filetarget import target_path
from cli.serviceopts import ServiceOptions, UpdateOptions, apply_update, build_spec, parse_file_ref
from manager import secretbox
from manager.dispatcher import files_for
from manager.filerefs import FileRefError, complete_references
from manager.store import Action, Conflict, NotFound, Store
from worker.taskfiles import TaskFiles


def test_seal_round_trip_and_tamper():
    key = secretbox.new_key()
    sealed = secretbox.seal(key, "s1", b"hunter2")
    assert b"hunter2" not in base64.b64decode(sealed)
    assert secretbox.unseal(key, "s1", sealed) == b"hunter2"
    with pytest.raises(secretbox.SealError):  # bound to its secret's id
        secretbox.unseal(key, "s2", sealed)
    with pytest.raises(secretbox.SealError):
        secretbox.unseal(secretbox.new_key(), "s1", sealed)
    with pytest.raises(secretbox.SealError):
        secretbox.unseal(key, "s1", "not base64!")


def _secret(sid="s1", name="pw"):
    return Secret(id=sid, spec=SecretSpec(name=name))


def _config(cid="c1", name="conf"):
    return Config(id=cid, spec=ConfigSpec(name=name, data=base64.b64encode(b"x=1").decode()))


def test_complete_references_fills_ids_and_default_targets():
    cs = ContainerSpec(secrets=[SecretReference(secret_name="pw")], configs=[ConfigReference(config_id="c1")])
    complete_references(cs, [_secret()], [_config()])
    s, c = cs.secrets[0], cs.configs[0]
    assert (s.secret_id, s.file.name, s.file.uid, s.file.mode) == ("s1", "pw", "0", 0o444)
    assert (c.config_name, c.file.name) == ("conf", "conf")
    assert target_path("secret", "pw") == "/run/secrets/pw" and target_path("config", "conf") == "/conf"
    assert target_path("config", "/etc/x/../app.conf") == "/etc/app.conf"


@pytest.mark.parametrize("cs, status, words", [
    (ContainerSpec(secrets=[SecretReference(secret_name="nope")]), 404, ["Secrets[0]", "not found"]),
    (ContainerSpec(secrets=[SecretReference()]), 400, ["Secrets[0]", "required"]),
    (ContainerSpec(secrets=[SecretReference(secret_name="pw", file=FileTarget(name="a/b"))]), 400, ["File.Name"]),
    (ContainerSpec(secrets=[SecretReference(secret_name="pw", file=FileTarget(name="x", uid="root"))]), 400,
     ["File.UID", "numeric"]),
    (ContainerSpec(secrets=[SecretReference(secret_name="pw", file=FileTarget(name="x", mode=0o10000))]), 400,
     ["File.Mode"]),
    (ContainerSpec(secrets=[SecretReference(secret_name="pw", file=FileTarget(name="/etc/a"))],
                   configs=[ConfigReference(config_name="conf", file=FileTarget(name="/etc/a"))]), 400,
     ["Configs[0].File.Name", "already used", "secret 'pw'"]),
])
def test_complete_references_names_the_field(cs, status, words):
    with pytest.raises(FileRefError) as err:
        complete_references(cs, [_secret()], [_config()])
    assert err.value.status == status and all(w in str(err.value) for w in words), str(err.value)


def _service(name="web", sid="v1", secret_ids=(), config_ids=()):
    cs = ContainerSpec(image="busybox", secrets=[SecretReference(secret_id=i, secret_name=i) for i in secret_ids],
                       configs=[ConfigReference(config_id=i, config_name=i) for i in config_ids])
    return Service(id=sid, spec=ServiceSpec(name=name, task_template=TaskSpec(container_spec=cs)))


def test_store_names_references_and_removal_in_use():
    st = Store()
    st.apply(1, "t", [Action("create", "secret", _secret())])
    with pytest.raises(Conflict, match="a secret named 'pw' already exists"):
        st.apply(2, "t", [Action("create", "secret", _secret("s2", "pw"))])
    st.apply(2, "t", [Action("create", "config", _config(name="pw"))])  # names are per kind
    with pytest.raises(NotFound, match="Secrets\\[0\\].SecretID"):
        st.apply(3, "t", [Action("create", "service", _service(secret_ids=["gone"]))])
    st.apply(3, "t", [Action("create", "service", _service(secret_ids=["s1"], config_ids=["c1"]))])
    with pytest.raises(Conflict, match="in use by the following service: web"):
        st.apply(4, "t", [Action("delete", "secret", None, "s1")])
    with pytest.raises(Conflict, match="in use"):
        st.apply(4, "t", [Action("delete", "config", None, "c1")])
    # the same entry may drop the use and the secret together
    st.apply(4, "t", [Action("delete", "service", None, "v1"), Action("delete", "secret", None, "s1")])
    assert st.get("secret", "s1") is None
    snap = st.snapshot()
    again = Store()
    again.restore(snap)
    assert again.get("config", "c1").spec.data == _config().spec.data


def _task(tid, secret_ids, state="running", desired="running", node="n1"):
    cs = ContainerSpec(secrets=[SecretReference(secret_id=i) for i in secret_ids])
    return Task(id=tid, node_id=node, desired_state=desired, spec=TaskSpec(container_spec=cs),
                status=TaskStatus(state=state))


def test_a_node_is_sent_only_what_its_live_tasks_use():
    key = secretbox.new_key()
    st = Store()
    st.apply(1, "t", [Action("create", "cluster", Cluster(id="c", secrets_key=key))] + [
        Action("create", "secret", Secret(id=i, spec=SecretSpec(name=i), sealed=secretbox.seal(key, i, i.encode())))
        for i in ("a", "b", "c")])
    tasks = [_task("t1", ["a"]), _task("t2", ["b"], state="failed"), _task("t3", ["c"], desired="shutdown")]
    out = files_for(st, tasks, st.get("cluster", "c"))
    assert out["Secrets"] == [{"ID": "a", "Data": b"a"}] and out["Configs"] == []
    assert files_for(st, tasks[1:], st.get("cluster", "c"))["Secrets"] == []


def test_node_holds_only_the_last_set(tmp_path):
    files = TaskFiles(tmp_path)
    files.update({"Secrets": [{"ID": "a", "Data": b"1"}], "Configs": []})
    files.update({"Secrets": [], "Configs": [{"ID": "c", "Data": b"2"}]})
    assert files.secrets == {} and files.configs == {"c": b"2"}
    with pytest.raises(ValueError, match=r"Secrets\[0\]"):
        files.update({"Secrets": [{"ID": "a", "Data": "text"}]})
    assert files.configs == {"c": b"2"}, "a bad message changes nothing"


def test_cli_flags():
    assert parse_file_ref("pw", "secret") == {"File": {"Name": "pw", "UID": "0", "GID": "0", "Mode": 0o444},
                                              "SecretName": "pw"}
    ref = parse_file_ref("src=app,target=/etc/app.conf,uid=5,mode=0400", "config")
    assert ref == {"File": {"Name": "/etc/app.conf", "UID": "5", "GID": "0", "Mode": 0o400}, "ConfigName": "app"}
    for text, words in [("source=pw,mode=9", "mode must be octal"), ("source=pw,color=red", "unknown key"),
                        ("target=x", "no source"), ("source=pw,uid=root", "uid must be")]:
        with pytest.raises(ValueError, match=words):
            parse_file_ref(text, "secret")
    spec = build_spec(ServiceOptions(image="busybox", secrets=["old"], configs=["conf"]))
    spec = apply_update(spec, UpdateOptions(secret_rm=["old"], secret_add=["source=new,target=old"]))
    refs = spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert [(r["SecretName"], r["File"]["Name"]) for r in refs] == [("new", "old")]
    spec = apply_update(spec, UpdateOptions(config_rm=["conf"]))
    assert "Configs" not in spec["TaskTemplate"]["ContainerSpec"]


def test_compose_secrets_and_configs_round_trip(tmp_path):
    """YAML (short and long syntax) -> spec -> the control API's decoder -> references the
    manager completes: names, targets, owners and modes as the file says."""
    import textwrap
    from api import codec
    from cli.compose import load_stack
    (tmp_path / "pw.txt").write_text("pw")
    (tmp_path / "stack.yml").write_text(textwrap.dedent("""
        version: "3.8"
        services:
          web:
            image: busybox
            secrets:
              - pw
              - source: api_key
                target: key
                uid: "1000"
                gid: "1001"
                mode: 0400
            configs:
              - source: conf
                target: /etc/app.conf
        secrets:
          pw:
            file: ./pw.txt
          api_key:
            external: true
        configs:
          conf:
            file: ./pw.txt
    """))
    plan = load_stack([str(tmp_path / "stack.yml")], "st", {})
    assert plan.secrets["st_pw"]["File"] == str(tmp_path / "pw.txt") and plan.secrets["api_key"]["External"]
    spec = codec.decode(ServiceSpec, plan.services[0])
    cs = spec.task_template.container_spec
    stored = [Secret(id="s1", spec=SecretSpec(name="st_pw")), Secret(id="s2", spec=SecretSpec(name="api_key"))]
    complete_references(cs, stored, [Config(id="c1", spec=ConfigSpec(name="st_conf"))])
    got = sorted((r.secret_id, r.secret_name, r.file.name, r.file.uid, r.file.gid, r.file.mode) for r in cs.secrets)
    assert got == [("s1", "st_pw", "pw", "0", "0", 0o444), ("s2", "api_key", "key", "1000", "1001", 0o400)]
    (c,) = cs.configs
    assert (c.config_id, c.file.name, target_path("config", c.file.name)) == ("c1", "/etc/app.conf", "/etc/app.conf")
