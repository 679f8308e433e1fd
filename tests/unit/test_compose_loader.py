"""YAML loading with line numbers, the .env and env_file formats, and file handling."""
from __future__ import annotations

import textwrap

import pytest

from cli.compose import ComposeError, load_stack
from cli.compose.envfile import parse_dotenv, parse_env_file
from cli.compose.errors import Pos
from cli.compose.loader import parse_yaml
from cli.compose.nodes import YList, YMap, plain


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def test_positions_of_keys_and_items():
    tree = parse_yaml("a: 1\nb:\n  c: x\n  d:\n    - p\n    - q\n", "f.yml")
    assert isinstance(tree, YMap)
    assert tree.pos_of("a") == Pos("f.yml", 1)
    assert tree.pos_of("b") == Pos("f.yml", 2)
    assert tree["b"].pos_of("d") == Pos("f.yml", 4)
    items = tree["b"]["d"]
    assert isinstance(items, YList)
    assert items.item_pos == [Pos("f.yml", 5), Pos("f.yml", 6)]
    assert plain(tree) == {"a": 1, "b": {"c": "x", "d": ["p", "q"]}}


def test_duplicate_key_is_an_error_with_both_lines():
    with pytest.raises(ComposeError) as exc:
        parse_yaml("services:\n  web:\n    image: a\n    image: b\n", "s.yml")
    assert str(exc.value) == 's.yml:4: duplicate key "image" (first defined on line 3)'


def test_merge_keys_override_and_do_not_count_as_duplicates():
    text = "base: &b\n  x: 1\n  y: 2\nuse:\n  <<: *b\n  y: 3\n"
    tree = parse_yaml(text, "f.yml")
    assert plain(tree["use"]) == {"x": 1, "y": 3}
    # the explicit key keeps its own line; merged keys point at the anchor's text
    assert tree["use"].pos_of("y").line == 6
    assert tree["use"].pos_of("x").line == 2


def test_port_like_scalars_stay_text_not_base_60():
    tree = parse_yaml("ports:\n  - 22:22\n  - 80\n  - 1:30.5\n", "f.yml")
    assert tree["ports"] == ["22:22", 80, "1:30.5"]


def test_dates_stay_text():
    assert parse_yaml("tag: 2024-01-02\n", "f.yml")["tag"] == "2024-01-02"


@pytest.mark.parametrize("text, line, fragment", [
    ("services:\n  web:\n    image: [unclosed\n", 4, "invalid YAML"),
    ("a: b\n  c: d\n", 2, "invalid YAML"),
    ("- a\n- b\n", 1, "must be a mapping"),
    ("", 1, "empty"),
    ("a: 1\n---\nb: 2\n", 2, "invalid YAML"),
    ("1: x\n", 1, "keys must be strings"),
    ("a: !!binary aGk=\n", 1, "binary"),
    ("a: !reset x\n", 1, "invalid YAML"),
])
def test_yaml_problems_carry_file_and_line(text, line, fragment):
    with pytest.raises(ComposeError) as exc:
        parse_yaml(text, "bad.yml")
    message = str(exc.value)
    assert message.startswith(f"bad.yml:{line}: "), message
    assert fragment in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.yml")
    with pytest.raises(ComposeError) as exc:
        load_stack([missing], "s", {})
    assert str(exc.value).startswith(f"{missing}: cannot read the file")


def test_stdin_and_its_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = load_stack(["-"], "s", {}, stdin_text="services:\n  web:\n    image: a\n    volumes: ['./d:/d']\n")
    mount = plan.services[0]["TaskTemplate"]["ContainerSpec"]["Mounts"][0]
    assert mount["Source"] == str(tmp_path / "d")


def test_stdin_errors_name_stdin():
    with pytest.raises(ComposeError) as exc:
        load_stack(["-"], "s", {}, stdin_text="services:\n  web:\n    imag: a\n")
    assert str(exc.value).startswith("<stdin>:3: services.web.imag: unknown key")


def test_stdin_twice_or_missing():
    with pytest.raises(ComposeError, match="only once"):
        load_stack(["-", "-"], "s", {}, stdin_text="services: {}")
    with pytest.raises(ComposeError, match="standard input"):
        load_stack(["-"], "s", {})


def test_no_files_and_bad_stack_names(tmp_path):
    path = write(tmp_path, "s.yml", "services:\n  web:\n    image: a\n")
    with pytest.raises(ComposeError, match="no compose file"):
        load_stack([], "s", {})
    for bad in ("", "has space", "-lead", "dot.ted", "a/b"):
        with pytest.raises(ComposeError) as exc:
            load_stack([path], bad, {})
        assert str(exc.value).startswith("stack: invalid stack name")


# ---------------------------------------------------------------- .env

def test_dotenv_syntax():
    text = textwrap.dedent("""
        # comment
        PLAIN=value
        SPACED = spaced value   # trailing comment
        export EXPORTED=yes
        EMPTY=
        DQ="a \\"quoted\\" \\n line"
        SQ='literal $HOME \\n'
        HASH=a#b
        QHASH="x # not a comment"  # but this is
    """)
    assert parse_dotenv(text, ".env") == {
        "PLAIN": "value",
        "SPACED": "spaced value",
        "EXPORTED": "yes",
        "EMPTY": "",
        "DQ": 'a "quoted" \n line',
        "SQ": "literal $HOME \\n",
        "HASH": "a#b",
        "QHASH": "x # not a comment",
    }


@pytest.mark.parametrize("text, line, fragment", [
    ("A=1\nNOEQUALS\n", 2, "expected KEY=VALUE"),
    ("1BAD=x\n", 1, "invalid variable name"),
    ('A="open\n', 1, "missing closing"),
    ("A='x' y\n", 1, "after the closing quote"),
])
def test_dotenv_errors(text, line, fragment):
    with pytest.raises(ComposeError) as exc:
        parse_dotenv(text, "/p/.env")
    assert str(exc.value).startswith(f"/p/.env:{line}: ")
    assert fragment in str(exc.value)


def test_env_file_is_raw_like_docker():
    text = "# c\n  A=1\nB=\"quoted\"\nC=a=b\nFROM_ENV\nMISSING\n\n"
    assert parse_env_file(text, {"FROM_ENV": "e"}) == [("A", "1"), ("B", '"quoted"'), ("C", "a=b"), ("FROM_ENV", "e")]
    with pytest.raises(ValueError, match="line 1"):
        parse_env_file("BAD KEY=1\n", {})
    with pytest.raises(ValueError, match="no variable name"):
        parse_env_file("=1\n", {})


def test_dotenv_file_beside_first_file_feeds_interpolation(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, ".env", "TAG=from-dotenv\nOTHER=dot\n")
    path = write(tmp_path, "s.yml", "services:\n  web:\n    image: app:${TAG}\n    environment: [\"X=${OTHER}\"]\n")
    plan = load_stack([path], "s", {"OTHER": "shell"})
    spec = plan.services[0]["TaskTemplate"]["ContainerSpec"]
    assert spec["Image"] == "app:from-dotenv"
    assert spec["Env"] == ["X=shell"]  # the given environment wins over .env


def test_dotenv_beside_a_later_file_is_not_read(tmp_path):
    (tmp_path / "other").mkdir()
    write(tmp_path, "other/.env", "TAG=wrong\n")
    first = write(tmp_path, "s.yml", "services:\n  web:\n    image: app:${TAG:-right}\n")
    second = write(tmp_path, "other/o.yml", "services:\n  web:\n    hostname: h\n")
    plan = load_stack([first, second], "s", {})
    assert plan.services[0]["TaskTemplate"]["ContainerSpec"]["Image"] == "app:right"


def test_bad_dotenv_is_reported(tmp_path):
    write(tmp_path, ".env", "OK=1\nbroken line\n")
    path = write(tmp_path, "s.yml", "services:\n  web:\n    image: a\n")
    with pytest.raises(ComposeError) as exc:
        load_stack([path], "s", {})
    assert str(exc.value).startswith(f"{tmp_path / '.env'}:2: ")
