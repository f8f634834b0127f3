"""Your own architectures and datasets, named in the config by import path (``builders``), beside the
registered ones of batchlab.models and batchlab.data.

An import path is ``module:function``. At parse time the module is found without being run
(``importlib``'s finders) and the function's parameters are read from its source (``ast``), so validating a
study imports neither the user's module nor torch; only a function the source does not define with a plain
``def`` (re-exported, a class, assigned) is checked by importing the module. Training jobs import the
function (:func:`function`), so the module must be importable where the jobs run.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any, Callable

# The parameters an architecture builder takes before its options, and those a dataset loader takes.
ARCHITECTURE_PARAMS = ("input_shape", "num_classes")
LOADER_PARAMS = ("options", "data_dir")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class BuilderError(ValueError):
    """A builder that cannot be used; the message starts with the config key that names it."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: inspect._ParameterKind
    has_default: bool

    def __str__(self) -> str:
        star = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(self.kind, "")
        return f"{star}{self.name}" + ("=..." if self.has_default else "")


def architecture_path(config: dict, name: str) -> str | None:
    """The import path of architecture ``name`` in the config's ``builders`` (None: a registered one)."""
    return config.get("builders", {}).get("architectures", {}).get(name)


def dataset_declaration(config: dict, name: str) -> dict | None:
    """The declaration of dataset ``name`` in the config's ``builders`` as a spec records it (None: a
    registered one): its loader's import path, input shape, number of classes and training set size."""
    declared = config.get("builders", {}).get("datasets", {}).get(name)
    if declared is None:
        return None
    return {"load": declared["load"], "input_shape": [int(n) for n in declared["input_shape"]],
            "num_classes": int(declared["num_classes"]), "train_size": int(declared["train_size"])}


def spec_fields(config: dict, dataset: str, arch: str) -> dict:
    """What a run's spec records of the user's builders, so that its id changes with them: ``builder`` for a
    user architecture, ``dataset_builder`` for a user dataset; nothing for registered names (their runs
    keep their ids)."""
    fields: dict[str, Any] = {}
    if architecture_path(config, arch) is not None:
        fields["builder"] = architecture_path(config, arch)
    if dataset_declaration(config, dataset) is not None:
        fields["dataset_builder"] = dataset_declaration(config, dataset)
    return fields


def split(path: str) -> tuple[str, str]:
    """``"pkg.mod:fn"`` -> ``("pkg.mod", "fn")`` (the schema has checked the form)."""
    module, _, name = path.partition(":")
    return module, name


def _find_module(key: str, module: str):
    """The module's spec, found without running it or its parent packages (a package's ``__init__`` may
    import torch); a module only the import system can find (a package that extends its own ``__path__``)
    falls back to :func:`importlib.util.find_spec`, which runs the parents. None when it does not exist."""
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
        for i in range(1, len(parts)):
            if spec is None or spec.submodule_search_locations is None:
                spec = None
                break
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), spec.submodule_search_locations)
        return spec if spec is not None or len(parts) == 1 else importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    except Exception as error:  # a parent package failed while running
        raise BuilderError(f"'{key}': importing module {module!r} failed: {type(error).__name__}: {error}") from None


def _ast_params(args: ast.arguments) -> list[Param]:
    """A ``def``'s parameters, as :func:`inspect.signature` would give them."""
    P = inspect.Parameter
    positional = [*args.posonlyargs, *args.args]
    n_plain = len(positional) - len(args.defaults)  # defaults belong to the last positional parameters
    params = [Param(a.arg, P.POSITIONAL_ONLY if i < len(args.posonlyargs) else P.POSITIONAL_OR_KEYWORD, i >= n_plain)
              for i, a in enumerate(positional)]
    if args.vararg:
        params.append(Param(args.vararg.arg, P.VAR_POSITIONAL, False))
    params += [Param(a.arg, P.KEYWORD_ONLY, d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg:
        params.append(Param(args.kwarg.arg, P.VAR_KEYWORD, False))
    return params


def _top_level(tree: ast.Module):
    """The module's top-level statements, those inside top-level ``if``/``try``/``with`` blocks too (not
    those inside functions or classes)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            todo += [n for handler in getattr(node, "handlers", []) for n in handler.body]


def _bound_names(node: ast.stmt) -> set[str]:
    """The names a class, an assignment or an import binds (``*`` for a star import)."""
    if isinstance(node, ast.ClassDef):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
        node, (ast.AnnAssign, ast.AugAssign)) else []
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _source_params(source: str, name: str) -> list[Param] | None | bool:
    """From the module's source: the parameters of a plain (undecorated) ``def name``; False when nothing at
    the top level can bind ``name`` (no def, class, assignment, import, star import or module
    ``__getattr__``); None when it may exist but is not a plain ``def`` (importing the module tells)."""
    found: list[Param] | None | bool = False
    for node in _top_level(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == name:  # a decorator may change what is called: importing tells
                found = None if node.decorator_list else _ast_params(node.args)
            elif node.name == "__getattr__" and found is False:
                found = None
        elif name in _bound_names(node) or "*" in _bound_names(node):
            found = None
    return found


def _imported_params(key: str, module: str, name: str) -> list[Param]:
    """The parameters of ``module.name``, by importing the module."""
    fn = function(path=f"{module}:{name}", key=key)
    try:
        return [Param(p.name, p.kind, p.default is not p.empty) for p in inspect.signature(fn).parameters.values()]
    except (TypeError, ValueError):  # a builtin without a signature: take it as it comes
        return [Param("args", inspect.Parameter.VAR_POSITIONAL, False), Param("kwargs", inspect.Parameter.VAR_KEYWORD, False)]


def parameters(key: str, path: str) -> list[Param]:
    """The parameters of the function at import ``path`` (see the module's docstring); raises
    :class:`BuilderError` starting with ``key`` when the module or the function does not exist."""
    module, name = split(path)
    spec = _find_module(key, module)
    if spec is None:
        raise BuilderError(f"'{key}': module {module!r} not found (is it installed or on PYTHONPATH?)")
    params: list[Param] | None | bool = None
    if spec.origin and spec.origin.endswith(".py"):
        try:
            with open(spec.origin, encoding="utf-8") as f:
                params = _source_params(f.read(), name)
        except (OSError, SyntaxError, UnicodeDecodeError):
            params = None  # importing it tells what is wrong
    if params is False:
        raise BuilderError(f"'{key}': module {module!r} has no function {name!r}")
    return params if params is not None else _imported_params(key, module, name)


def function(path: str, key: str = "builders") -> Callable[..., Any]:
    """The function at import ``path``, imported (in a training or preparation job)."""
    module, name = split(path)
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise BuilderError(f"'{key}': module {module!r} not found (is it installed or on PYTHONPATH?): {error}") from None
    except Exception as error:  # the user's module failed while running: say which and why, in one line
        raise BuilderError(f"'{key}': importing module {module!r} failed: {type(error).__name__}: {error}") from None
    fn = getattr(imported, name, None)
    if fn is None:
        raise BuilderError(f"'{key}': module {module!r} has no function {name!r}")
    if not callable(fn):
        raise BuilderError(f"'{key}': {path} is a {type(fn).__name__}, not a function")
    return fn


def _takes(params: list[Param], first: tuple[str, ...]) -> bool:
    """Whether a call ``fn(a, b)`` with ``len(first)`` positional values fits ``params``."""
    positional = [p for p in params if p.kind in _POSITIONAL]
    varargs = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params)
    if len(positional) < len(first) and not varargs:
        return False
    rest = positional[len(first):] + [p for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY]
    return not any(p.kind == inspect.Parameter.POSITIONAL_ONLY and not p.has_default for p in rest)


def _signature(params: list[Param]) -> str:
    return "(" + ", ".join(map(str, params)) + ")"


def check_architecture(key: str, path: str, option_sets: dict[str, dict]) -> None:
    """An architecture builder: found, callable as ``builder(input_shape, num_classes, **options)`` and
    taking every option of ``option_sets`` (per config key that sets them, the ``model_options`` given)."""
    params = parameters(key, path)
    if not _takes(params, ARCHITECTURE_PARAMS):
        raise BuilderError(f"'{key}': {path} must accept (input_shape, num_classes, **options); it takes {_signature(params)}")
    # the parameters after (input_shape, num_classes) are the options
    positional = [p for p in params if p.kind in _POSITIONAL][len(ARCHITECTURE_PARAMS):]
    named = ([p for p in positional if p.kind != inspect.Parameter.POSITIONAL_ONLY]
             + [p for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY])
    allowed = [p.name for p in named]
    any_keyword = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)
    for where, options in option_sets.items():
        for option in options:
            if option not in allowed and not any_keyword:
                raise BuilderError(f"'{where}.{option}': builder {path} takes no option {option!r}; allowed: {allowed}")
        missing = [p.name for p in named if not p.has_default and p.name not in options]
        if missing:
            raise BuilderError(f"'{where}': builder {path} needs option {missing[0]!r} (it has no default); "
                               f"give it in model_options")


def check_loader(key: str, path: str) -> None:
    """A dataset loader: found and callable as ``load(options, data_dir)``."""
    params = parameters(key, path)
    required = [p for p in params if not p.has_default and p.kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                                          inspect.Parameter.VAR_KEYWORD)]
    if not _takes(params, LOADER_PARAMS) or len(required) > len(LOADER_PARAMS):
        raise BuilderError(f"'{key}': {path} must accept (options, data_dir); it takes {_signature(params)}")


def check_arrays(name: str, declared: dict, arrays: dict) -> None:
    """The prepared arrays of user dataset ``name`` against its declaration in ``builders.datasets``:
    every example of the declared ``input_shape``, labels from 0 to ``num_classes`` - 1, ``train_size``
    training examples, as many labels as inputs."""
    key = f"builders.datasets.{name}"
    shape = tuple(declared["input_shape"])
    for split_name in ("train", "test"):
        x, y = arrays[f"x_{split_name}"], arrays[f"y_{split_name}"]
        if tuple(x.shape[1:]) != shape:
            raise BuilderError(f"'{key}.input_shape': the loader's x_{split_name} has examples of shape "
                               f"{tuple(x.shape[1:])}, declared {list(shape)}")
        if y.ndim != 1 or len(y) != len(x):
            raise BuilderError(f"'{key}.load': the loader's y_{split_name} has shape {tuple(y.shape)}; "
                               f"expected ({len(x)},), one label per example of x_{split_name}")
        if len(y) and (y.min() < 0 or y.max() >= declared["num_classes"]):
            raise BuilderError(f"'{key}.num_classes': the loader's y_{split_name} has labels from {y.min()} to "
                               f"{y.max()}; declared {declared['num_classes']} classes (labels 0 to "
                               f"{declared['num_classes'] - 1})")
    if len(arrays["x_train"]) != declared["train_size"]:
        raise BuilderError(f"'{key}.train_size': the loader gives {len(arrays['x_train'])} training examples, "
                           f"declared {declared['train_size']}")
