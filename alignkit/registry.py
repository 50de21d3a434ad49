"""Every registry of alignkit, in one place.

Kinds mmengine already knows (model, dataset, transform, hook, metric, ...) are
children of mmengine's registries, so mmengine's Runner finds alignkit classes
through ``default_scope = 'alignkit'`` and still falls back to mmengine's own.
Kinds only alignkit has (labeler, sampler, align loss, adapter) are roots.

The key of a class is its name: no aliases, no ``force=True``. ``locations``
makes look-ups lazy: building ``dict(type='WindowSampler')`` imports
``alignkit.samplers`` on first use, so nothing needs importing by hand.

A ``type`` string resolves only to a class registered in the registry tree
(:class:`AlignkitRegistry`): mmengine's ``Registry.get`` falls back to importing
any dotted path (``type='subprocess.Popen'`` builds a process) and to importing
``<scope>.registry`` for an unknown scope; alignkit's registries do neither, so
a name read from a file never imports or runs anything by itself.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

SCOPE = "alignkit"


class AlignkitRegistry(Registry):
    """mmengine's ``Registry`` whose ``get`` resolves a key only among registered classes.

    - ``'Name'``: this registry, then its parents (mmengine's own registries);
    - ``'alignkit.Name'``: this registry only;
    - ``'<scope>.Name'``: the registry of that scope, if it is already in the
      tree (its parents too), else nothing.

    No import of a dotted path, no import of ``<scope>.registry``: an unknown
    key gives None, and ``build`` then raises mmengine's KeyError naming the
    key and the registry.
    """

    def get(self, key: str):
        if not isinstance(key, str):
            raise TypeError(f"the key of Registry.get must be a str, got {type(key).__name__}")
        scope, name = self.split_scope_key(key)
        self.import_from_location()
        if scope is None or scope == self._scope:
            node = self
        else:
            node = self._children.get(scope)
            if node is None:
                node = self._get_root_registry()._search_child(scope)
        while node is not None:
            if name in node._module_dict:
                return node._module_dict[name]
            if scope == self._scope:  # 'alignkit.Name' asks this registry alone
                return None
            node = node.parent
        return None


# --- kinds only alignkit has: roots ------------------------------------------
LABELERS = AlignkitRegistry("labeler", scope=SCOPE, locations=["alignkit.labelers"])
SAMPLERS = AlignkitRegistry("sampler", scope=SCOPE, locations=["alignkit.samplers"])
ALIGN_LOSSES = AlignkitRegistry("align loss", scope=SCOPE, locations=["alignkit.losses"])
ADAPTERS = AlignkitRegistry("adapter", scope=SCOPE, locations=["alignkit.adapters"])

# --- kinds mmengine has: children of mmengine's -----------------------------
RUNNERS = AlignkitRegistry("runner", parent=MMENGINE_RUNNERS, scope=SCOPE)
LOOPS = AlignkitRegistry("loop", parent=MMENGINE_LOOPS, scope=SCOPE)
HOOKS = AlignkitRegistry("hook", parent=MMENGINE_HOOKS, scope=SCOPE, locations=["alignkit.engine"])
MODELS = AlignkitRegistry("model", parent=MMENGINE_MODELS, scope=SCOPE, locations=["alignkit.models"])
MODEL_WRAPPERS = AlignkitRegistry("model_wrapper", parent=MMENGINE_MODEL_WRAPPERS, scope=SCOPE)
DATASETS = AlignkitRegistry("dataset", parent=MMENGINE_DATASETS, scope=SCOPE, locations=["alignkit.datasets"])
DATA_SAMPLERS = AlignkitRegistry(
    "data sampler", parent=MMENGINE_DATA_SAMPLERS, scope=SCOPE, locations=["alignkit.datasets"]
)
TRANSFORMS = AlignkitRegistry("transform", parent=MMENGINE_TRANSFORMS, scope=SCOPE, locations=["alignkit.datasets"])
FUNCTIONS = AlignkitRegistry("function", parent=MMENGINE_FUNCTIONS, scope=SCOPE, locations=["alignkit.datasets"])
METRICS = AlignkitRegistry("metric", parent=MMENGINE_METRICS, scope=SCOPE, locations=["alignkit.engine"])
EVALUATOR = AlignkitRegistry("evaluator", parent=MMENGINE_EVALUATOR, scope=SCOPE)
OPTIMIZERS = AlignkitRegistry("optimizer", parent=MMENGINE_OPTIMIZERS, scope=SCOPE)
OPTIM_WRAPPERS = AlignkitRegistry("optim_wrapper", parent=MMENGINE_OPTIM_WRAPPERS, scope=SCOPE)
OPTIM_WRAPPER_CONSTRUCTORS = AlignkitRegistry(
    "optimizer wrapper constructor", parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope=SCOPE
)
PARAM_SCHEDULERS = AlignkitRegistry("parameter scheduler", parent=MMENGINE_PARAM_SCHEDULERS, scope=SCOPE)
VISUALIZERS = AlignkitRegistry("visualizer", parent=MMENGINE_VISUALIZERS, scope=SCOPE)
VISBACKENDS = AlignkitRegistry("vis_backend", parent=MMENGINE_VISBACKENDS, scope=SCOPE)
# FlexibleRunner builds its (DeepSpeed / DDP) strategy under the default scope.
STRATEGIES = AlignkitRegistry("strategy", parent=MMENGINE_STRATEGIES, scope=SCOPE)
LOG_PROCESSORS = AlignkitRegistry("log_processor", parent=MMENGINE_LOG_PROCESSORS, scope=SCOPE)

# The registries alignkit owns the contents of (tests parametrise over these).
ALIGNKIT_ROOTS = {
    "labeler": LABELERS,
    "sampler": SAMPLERS,
    "align loss": ALIGN_LOSSES,
    "adapter": ADAPTERS,
}
