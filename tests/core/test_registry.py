"""One registration mechanism: unique names, one clear error for an unknown one."""

from __future__ import annotations

import pytest

from promptbank.errors import InvalidDataError
from promptbank.keys import KEY_ENCODERS
from promptbank.prompts import PROMPTS
from promptbank.registry import Registry
from promptbank.routing import ROUTERS


def test_a_name_is_registered_once_and_unknown_names_list_the_valid_ones():
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    reg.register("b")(2)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(3)
    assert reg["a"] == 1 and reg.names() == ["a", "b"] and reg.values() == [1, 2] and "b" in reg and len(reg) == 2
    with pytest.raises(InvalidDataError, match="unknown widget 'c'; choose one of: a, b"):
        reg.get("c")


def test_an_alias_names_the_same_entry_and_cannot_shadow_one():
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    reg.alias("aa", "a")
    assert reg["aa"] == 1 and "aa" in reg and reg.names() == ["a"] and reg.aliases() == {"aa": "a"}
    for name, target in (("a", "a"), ("aa", "a"), ("b", "missing")):
        with pytest.raises(ValueError, match="alias"):
            reg.alias(name, target)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("aa")(2)


def test_the_library_extension_points_are_registries():
    assert {"ulpt", "pt", "lopt1", "lopt2", "dept", "ssb", "ssl", "ia3", "lora", "vera"} <= set(PROMPTS.names())
    assert {"lda", "gaussian", "knn"} <= set(ROUTERS.names())
    assert {"minilm", "embedding-set-mean", "embedding-mean", "backbone-mean"} <= set(KEY_ENCODERS.names())
