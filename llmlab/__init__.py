"""llmlab: the mathematics and engineering of large language models, as 20 graded labs.

Layout (see the README's "Layout"): the course's concepts are modules and subpackages of ``llmlab``
(``linalg``, ``autodiff``, ``information``, ``optim``, ``tokenization``, ``inference``...); ``llmlab.labs``
composes them into graded labs; ``llmlab.platform`` holds the platform around them (grading, submissions,
gradebook, Ray jobs, Kubernetes, the local stack, SLOs, dashboards); ``llmlab.cli`` is the command line.
Imports go one way: platform -> labs -> concepts, never back. Importing ``llmlab`` itself is light: torch
is imported only by the modules that need it.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# Modules that moved into llmlab.platform (release 0.2 layout): the old names still import, as the very
# same module objects, with a DeprecationWarning.
_MOVED = {f"llmlab.{name}": f"llmlab.platform.{name}" for name in (
    "asgi", "chart", "course", "dashboards", "gradebook", "grading", "jobs", "k8s", "metrics", "slo", "stack",
    "submissions")}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    @staticmethod
    def _target(name: str) -> str | None:
        old = next((o for o in _MOVED if name == o or name.startswith(o + ".")), None)
        return None if old is None else _MOVED[old] + name[len(old):]

    def find_spec(self, name, path=None, target=None):
        new = self._target(name)
        return None if new is None else importlib.util.spec_from_loader(name, self, is_package=True)

    def __init__(self):
        self._own_specs: dict[str, importlib.machinery.ModuleSpec] = {}  # alias name -> the module's own spec

    def create_module(self, spec):
        new = self._target(spec.name)
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._own_specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # the import system set the alias's spec on the shared module object: give it back its own
        module.__spec__ = self._own_specs.pop(module.__spec__.name)


sys.meta_path.insert(0, _MovedModules())  # before the path finder, which would load a second copy
