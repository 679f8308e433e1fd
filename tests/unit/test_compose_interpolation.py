"""Variable substitution: every operator, nesting, escapes, errors with lines, warnings."""
from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, strategies as st

from cli.compose import ComposeError, load_stack
from cli.compose.interpolate import TemplateError, substitute

ENV = {"SET": "value", "EMPTY": "", "NUM": "3", "OTHER": "o"}


def sub(text, env=ENV):
    missing = []
    return substitute(text, env, missing.append), missing


@pytest.mark.parametrize("text, expected", [
    ("plain", "plain"),
    ("$SET", "value"),
    ("${SET}", "value"),
    ("a${SET}b", "avalueb"),
    ("$SET-x", "value-x"),
    ("$SET.x", "value.x"),
    ("${SET:-d}", "value"),
    ("${EMPTY:-d}", "d"),
    ("${UNSET:-d}", "d"),
    ("${SET-d}", "value"),
    ("${EMPTY-d}", ""),
    ("${UNSET-d}", "d"),
    ("${SET:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${SET:?boom}", "value"),
    ("${EMPTY?boom}", ""),
    ("$$", "$"),
    ("$$SET", "$SET"),
    ("$${SET}", "${SET}"),
    ("$$$SET", "$value"),
    ("${UNSET:-${OTHER}}", "o"),
    ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
    ("${UNSET:-a $$ b}", "a $ b"),
    ("${UNSET:-with:colon-and-dash}", "with:colon-and-dash"),
    ("${UNSET:-}", ""),
    ("x${NUM}y$NUM", "x3y3"),
    ("${_under_1}", ""),
])
def test_substitution(text, expected):
    assert sub(text)[0] == expected


def test_unset_plain_references_are_reported():
    assert sub("$UNSET and ${GONE}") == (" and ", ["UNSET", "GONE"])
    assert sub("${UNSET:-d}")[1] == []


@pytest.mark.parametrize("text, fragment", [
    ("${UNSET:?needs a value}", "required variable UNSET is missing a value: needs a value"),
    ("${EMPTY:?no empty}", "required variable EMPTY is missing a value: no empty"),
    ("${UNSET?}", "required variable UNSET is missing a value: must be set"),
    ("${UNSET?msg with ${SET}}", "msg with value"),
    ("$(hostname)", 'write "$$" for a literal "$"'),
    ("cost: 5$", 'write "$$"'),
    ("${unterminated", 'missing "}"'),
    ("${}", "expected a variable name"),
    ("${1ABC}", "expected a variable name"),
    ("${A B}", 'unexpected " "'),
    ("${A#x}", 'unexpected "#"'),
])
def test_template_errors(text, fragment):
    with pytest.raises(TemplateError) as exc:
        sub(text)
    assert fragment in str(exc.value)


@given(st.text(alphabet=st.characters(blacklist_characters="$"), max_size=40))
def test_text_without_dollar_is_unchanged(text):
    assert sub(text)[0] == text


@given(st.text(max_size=30))
def test_doubled_dollars_round_trip(text):
    # Escaping every "$" as "$$" yields the original text, whatever it holds.
    assert sub(text.replace("$", "$$"))[0] == text


# ---------------------------------------------------------------- in files


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def container(plan, index=0):
    return plan.services[index]["TaskTemplate"]["ContainerSpec"]


def test_values_interpolated_keys_not(tmp_path):
    path = write(tmp_path, "s.yml", """
        services:
          web:
            image: ${IMAGE}
            labels:
              $KEY: ${VAL}
            environment:
              - LIST=${VAL}
    """)
    plan = load_stack([path], "s", {"IMAGE": "busybox", "KEY": "k", "VAL": "v"})
    assert container(plan)["Image"] == "busybox"
    assert container(plan)["Labels"]["$KEY"] == "v"
    assert container(plan)["Env"] == ["LIST=v"]


def test_interpolated_numbers_and_booleans_are_typed(tmp_path):
    path = write(tmp_path, "s.yml", """
        services:
          web:
            image: a
            read_only: ${RO}
            deploy:
              replicas: ${N}
              update_config:
                max_failure_ratio: ${RATIO}
            ports:
              - target: ${PORT}
                published: ${PORT}
    """)
    plan = load_stack([path], "s", {"RO": "yes", "N": "4", "RATIO": "0.25", "PORT": "8080"})
    spec = plan.services[0]
    assert spec["Mode"] == {"Replicated": {"Replicas": 4}}
    assert spec["UpdateConfig"]["MaxFailureRatio"] == 0.25
    assert spec["TaskTemplate"]["ContainerSpec"]["ReadOnly"] is True
    assert spec["EndpointSpec"]["Ports"][0]["PublishedPort"] == 8080


def test_interpolation_error_has_line_and_path(tmp_path):
    path = write(tmp_path, "s.yml", """
        services:
          web:
            image: a
            environment:
              PW: ${DB_PASSWORD:?set DB_PASSWORD first}
    """)
    with pytest.raises(ComposeError) as exc:
        load_stack([path], "s", {})
    assert str(exc.value) == (
        f"{path}:5: services.web.environment.PW: required variable DB_PASSWORD is missing a value: set DB_PASSWORD first"
    )


def test_invalid_dollar_in_list_item_points_at_item(tmp_path):
    path = write(tmp_path, "s.yml", """
        services:
          web:
            image: a
            command:
              - sh
              - -c
              - echo $(hostname)
    """)
    with pytest.raises(ComposeError) as exc:
        load_stack([path], "s", {})
    assert str(exc.value).startswith(f"{path}:7: services.web.command[2]: invalid interpolation")


def test_unset_variable_warns_and_substitutes_empty(tmp_path):
    path = write(tmp_path, "s.yml", """
        services:
          web:
            image: busybox${SUFFIX}
    """)
    plan = load_stack([path], "s", {})
    assert container(plan)["Image"] == "busybox"
    assert plan.warnings == [f'{path}:3: services.web.image: variable "SUFFIX" is not set, substituting an empty string']


def test_interpolation_happens_per_file_before_validation(tmp_path):
    base = write(tmp_path, "base.yml", "services:\n  web:\n    image: a\n    deploy:\n      replicas: ${R:-2}\n")
    override = write(tmp_path, "over.yml", "services:\n  web:\n    deploy:\n      replicas: ${R2}\n")
    plan = load_stack([base, override], "s", {"R2": "5"})
    assert plan.services[0]["Mode"]["Replicated"]["Replicas"] == 5
    with pytest.raises(ComposeError) as exc:
        load_stack([base, override], "s", {"R2": "many"})
    assert str(exc.value) == f'{override}:4: services.web.deploy.replicas: must be an integer, got "many"'


def test_extension_fields_are_interpolated_but_dropped(tmp_path):
    path = write(tmp_path, "s.yml", """
        x-bad: ${OK:-fine}
        services:
          web:
            image: a
    """)
    assert load_stack([path], "s", {}).warnings == []
