"""METHODS: the closed registry of adaptation methods (name -> Method).

Adding a method is one entry here plus its module; the recipe schema's discriminated union in
`finetune.recipe.schema` must list the same names (a test checks both agree). Importing this package
must not import torch: `finetune validate` asks the methods which families/tasks they serve.
"""

from __future__ import annotations

from finetune.methods.base import Method, MethodContext
from finetune.methods.bitfit import BitFitMethod
from finetune.methods.bottleneck import HoulsbyMethod, PfeifferMethod
from finetune.methods.full import FullMethod
from finetune.methods.peft_methods import (
    DoraMethod,
    IA3Method,
    LoraMethod,
    PrefixMethod,
    PromptMethod,
    RsLoraMethod,
)

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        FullMethod(),
        LoraMethod(),
        DoraMethod(),
        RsLoraMethod(),
        IA3Method(),
        PrefixMethod(),
        PromptMethod(),
        HoulsbyMethod(),
        PfeifferMethod(),
        BitFitMethod(),
    )
}


def get_method(name: str) -> Method:
    return METHODS[name]


__all__ = ["METHODS", "Method", "MethodContext", "get_method"]
