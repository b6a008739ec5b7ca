"""Command-line options and form fields generated from a settings dataclass.

A settings dataclass (:class:`lift_core.train.config.FinetuneConfig`) is the one place a
setting is written: its name, type, default and the one-line docstring under the field.
:func:`config_fields` reads them (the docstrings from the class source, with ``ast``), and
the CLI (:func:`add_config_options`, :func:`config_argv`) and the app's form are built
from that list, so a new setting is one edit. Choices of a field come from the class's
``choices()`` (e.g. the method names of the registry).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing

_SIMPLE_KINDS = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class ConfigField:
    """One setting of a settings dataclass, as the CLI and the app's form need it."""

    name: str
    kind: type  # bool, int, float or str
    optional: bool  # None is allowed (and usually means "decide for me")
    default: object
    doc: str  # the docstring under the field, on one line
    choices: tuple | None = None  # the allowed values, for names (method, device, ...)

    @property
    def flag(self) -> str:
        """The command-line option: ``--lora-rank`` for ``lora_rank``."""
        return "--" + self.name.replace("_", "-")


def config_fields(cls) -> list[ConfigField]:
    """Every field of the dataclass ``cls``, in declaration order.

    Raises:
        TypeError: a field without a docstring or of a type a CLI cannot parse (a bug in
            ``cls``, caught by the tests).
    """
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    choices = cls.choices() if hasattr(cls, "choices") else {}
    found = []
    for f in dataclasses.fields(cls):
        kind, optional = _kind(hints[f.name])
        if not docs.get(f.name):
            raise TypeError(f"{cls.__name__}.{f.name} has no docstring (it is the help text)")
        found.append(ConfigField(f.name, kind, optional, f.default, docs[f.name],
                                 tuple(choices[f.name]) if f.name in choices else None))
    return found


@functools.lru_cache(maxsize=None)
def field_docs(cls) -> dict[str, str]:
    """``{field: docstring}`` from the string literal under each field in the class source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for statement, following in zip(body, body[1:]):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[statement.target.id] = " ".join(inspect.cleandoc(following.value.value).split())
    return docs


def _kind(hint) -> tuple[type, bool]:
    """``int`` -> (int, False); ``int | None`` -> (int, True)."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else hint
    if hint not in _SIMPLE_KINDS:
        raise TypeError(f"unsupported settings type {hint!r} (use bool, int, float, str or X | None)")
    return hint, optional


def option_help(f: ConfigField) -> str:
    """The field's docstring, plus its default where one is worth saying."""
    text = f.doc
    if f.default is not None and f.kind is not bool:
        text += f" (default: {f.default})"
    return text.replace("%", "%%")  # argparse formats help with %


def add_config_options(parser: argparse.ArgumentParser, cls, *, skip=(), flags=None,
                       required=(), metavars=None) -> None:
    """Add one option per field of ``cls`` (but ``skip``) to ``parser``.

    Every option defaults to None, so an option left out keeps the dataclass default; its
    value lands under the field's name (``args.lora_rank``). A bool field is a switch.

    Args:
        skip: field names that get no option.
        flags: field name -> option name where it is not ``--field-name`` (``--out``).
        required: field names whose option must be given.
        metavars: field name -> metavar shown in the usage line.
    """
    flags, metavars = flags or {}, metavars or {}
    for f in config_fields(cls):
        if f.name in skip:
            continue
        kwargs = {"dest": f.name, "default": None, "help": option_help(f)}
        if f.kind is bool:
            kwargs["action"] = "store_true" if not f.default else argparse.BooleanOptionalAction
        else:
            kwargs.update(type=f.kind, choices=f.choices, required=f.name in required)
            if f.name in metavars:
                kwargs["metavar"] = metavars[f.name]
        parser.add_argument(flags.get(f.name, f.flag), **kwargs)


def given_values(args: argparse.Namespace, cls, *, skip=()) -> dict:
    """The fields of ``cls`` that were given on the command line (not None), by name."""
    return {f.name: getattr(args, f.name) for f in config_fields(cls)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def config_argv(config, *, skip=(), flags=None) -> list[str]:
    """The options that make :func:`add_config_options`' parser rebuild ``config``.

    Only settings that differ from the defaults are written, in field order; floats are
    written exactly (``repr``), so the command trains what the config says.
    """
    flags, argv = flags or {}, []
    for f in config_fields(type(config)):
        value = getattr(config, f.name)
        if f.name in skip or value == f.default:
            continue
        flag = flags.get(f.name, f.flag)
        if f.kind is bool:
            argv.append(flag if value else "--no-" + flag.removeprefix("--"))
        elif value is None:
            raise ValueError(f"{f.name}=None cannot be written as an option (its default is "
                             f"{f.default!r})")
        else:
            argv += [flag, str(value)]
    return argv


# FinetuneConfig fields whose option is not --field-name.
OPTION_FLAGS = {"out_dir": "--out"}

# FinetuneConfig fields that differ per method: every other one is an option of `compare`
# (generated from the config, as for `finetune`), the same for every method.
PER_METHOD_FIELDS = ("method", "lr", "out_dir")


def finetune_options(config, *, skip=()) -> list[str]:
    """The options of ``finetune`` (or ``compare``) that rebuild ``config``'s settings.

    The inverse of :func:`lift_core.cli.finetune.config_from_args`: settings left at their defaults are left out.
    """
    return config_argv(config, skip=skip, flags=OPTION_FLAGS)
