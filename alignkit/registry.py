"""Every registry of alignkit, in one place.

Kinds mmengine already knows (model, dataset, transform, hook, metric, ...) are
children of mmengine's registries, so mmengine's Runner finds alignkit classes
through ``default_scope = 'alignkit'`` and still falls back to mmengine's own.
Kinds only alignkit has (labeler, sampler, align loss, adapter) are roots.

The key of a class is its name: no aliases, no ``force=True``. ``locations``
makes look-ups lazy: building ``dict(type='WindowSampler')`` imports
``alignkit.samplers`` on first use, so nothing needs importing by hand.
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

# --- kinds only alignkit has: roots ------------------------------------------
LABELERS = Registry("labeler", scope=SCOPE, locations=["alignkit.labelers"])
SAMPLERS = Registry("sampler", scope=SCOPE, locations=["alignkit.samplers"])
ALIGN_LOSSES = Registry("align loss", scope=SCOPE, locations=["alignkit.losses"])
ADAPTERS = Registry("adapter", scope=SCOPE, locations=["alignkit.adapters"])

# --- kinds mmengine has: children of mmengine's -----------------------------
RUNNERS = Registry("runner", parent=MMENGINE_RUNNERS, scope=SCOPE)
LOOPS = Registry("loop", parent=MMENGINE_LOOPS, scope=SCOPE)
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope=SCOPE, locations=["alignkit.engine"])
MODELS = Registry("model", parent=MMENGINE_MODELS, scope=SCOPE, locations=["alignkit.models"])
MODEL_WRAPPERS = Registry("model_wrapper", parent=MMENGINE_MODEL_WRAPPERS, scope=SCOPE)
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope=SCOPE, locations=["alignkit.datasets"])
DATA_SAMPLERS = Registry("data sampler", parent=MMENGINE_DATA_SAMPLERS, scope=SCOPE, locations=["alignkit.datasets"])
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, scope=SCOPE, locations=["alignkit.datasets"])
FUNCTIONS = Registry("function", parent=MMENGINE_FUNCTIONS, scope=SCOPE, locations=["alignkit.datasets"])
METRICS = Registry("metric", parent=MMENGINE_METRICS, scope=SCOPE, locations=["alignkit.engine"])
EVALUATOR = Registry("evaluator", parent=MMENGINE_EVALUATOR, scope=SCOPE)
OPTIMIZERS = Registry("optimizer", parent=MMENGINE_OPTIMIZERS, scope=SCOPE)
OPTIM_WRAPPERS = Registry("optim_wrapper", parent=MMENGINE_OPTIM_WRAPPERS, scope=SCOPE)
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    "optimizer wrapper constructor", parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope=SCOPE
)
PARAM_SCHEDULERS = Registry("parameter scheduler", parent=MMENGINE_PARAM_SCHEDULERS, scope=SCOPE)
VISUALIZERS = Registry("visualizer", parent=MMENGINE_VISUALIZERS, scope=SCOPE)
VISBACKENDS = Registry("vis_backend", parent=MMENGINE_VISBACKENDS, scope=SCOPE)
# FlexibleRunner builds its (DeepSpeed / DDP) strategy under the default scope.
STRATEGIES = Registry("strategy", parent=MMENGINE_STRATEGIES, scope=SCOPE)
LOG_PROCESSORS = Registry("log_processor", parent=MMENGINE_LOG_PROCESSORS, scope=SCOPE)

# The registries alignkit owns the contents of (tests parametrise over these).
ALIGNKIT_ROOTS = {
    "labeler": LABELERS,
    "sampler": SAMPLERS,
    "align loss": ALIGN_LOSSES,
    "adapter": ADAPTERS,
}
