"""One runner per command: a frozen config in, a typed result out. This is the notebook API;
the CLI only maps its options to a config, calls the runner and prints the result.

    from hookunlearn.pipeline import SelectConfig, select
    result = select(SelectConfig(out="sel/"))

Importing this package imports torch; the CLI imports it inside command bodies only.
"""

from __future__ import annotations

# The functions are bound after their modules, so ``hookunlearn.pipeline.select`` is the runner.
from hookunlearn.pipeline.build import BuildConfig, BuildResult, build
from hookunlearn.pipeline.demo import DemoConfig, DemoResult, demo
from hookunlearn.pipeline.eval import EvalConfig, EvalRun, evaluate
from hookunlearn.pipeline.export import ExportConfig, export
from hookunlearn.pipeline.select import SelectConfig, SelectResult, select
from hookunlearn.pipeline.unlearn import UnlearnConfig, UnlearnResult, UnlearnRun, unlearn, unlearn_model

__all__ = [
    "BuildConfig",
    "BuildResult",
    "DemoConfig",
    "DemoResult",
    "EvalConfig",
    "EvalRun",
    "ExportConfig",
    "SelectConfig",
    "SelectResult",
    "UnlearnConfig",
    "UnlearnResult",
    "UnlearnRun",
    "build",
    "demo",
    "evaluate",
    "export",
    "select",
    "unlearn",
    "unlearn_model",
]
