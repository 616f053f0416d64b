"""The MetaGen Spec Language (MSL 1.0), declared once as data.

The spec builder validates against this table, `metagen schema` prints it as JSON
Schema, the DSL formatter orders keys by it and the docs list it. A field's `default`
is the value a spec gets when it does not say; `None` means "decided by a compiler
pass" (family conventions, fitted dimensions), and the pass records its choice in
`spec_resolved.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metagen.backends import registry
from metagen.compiler.devices import DTYPE_PRECISION, PRECISION_BYTES

# Value kinds. Each maps to one check in spec_builder and one JSON Schema fragment.
STR, INT, FLOAT, BOOL = "str", "int", "float", "bool"
PARAMS, BYTES, CONTEXT = "params", "bytes", "context"
LATENCY, RATE, DURATION, HARDWARE, DATA_SIZE = "latency", "rate", "duration", "hardware", "data_size"
ENUM, LIST, MAP = "enum", "list", "map"


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    doc: str
    default: Any = None
    choices: tuple[str, ...] = ()
    item: "Field | None" = None  # list item
    fields: tuple["Field", ...] = ()  # map members
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False
    open_choices: bool = False  # unknown enum values warn instead of failing
    # Words read as one of `choices`, with a note (a task word in a modality list:
    # outputs ["classification"] means the modality "label").
    aliases: tuple[tuple[str, str], ...] = ()
    recorded: bool = False  # kept in spec_resolved.yaml, cannot change the model (one note says so)
    one_or_many: bool = False  # a list that may also be written as one value, silently
    scalar_key: str = ""  # a mapping that may also be written as one value: the value of this member
    arch_key: str = ""  # the architecture key this key sets when the architecture section does not

    def member(self, name: str) -> "Field | None":
        for f in self.fields:
            if f.name == name:
                return f
        return None


def _map(name, doc, *fields, required=False, recorded=False, scalar_key=""):
    return Field(name, MAP, doc, fields=tuple(fields), required=required, recorded=recorded, scalar_key=scalar_key)


def _recorded(name, kind, doc, **kw):
    """A key kept in spec_resolved.yaml that cannot change the model."""
    return Field(name, kind, doc, recorded=True, **kw)


# The modalities the language names (the original MetaGen vocabulary among them);
# which combinations are built is the families' business (docs/families.md).
TUTORIAL_MODALITIES = ("text", "image", "audio", "video", "label", "embedding")
MODALITIES = TUTORIAL_MODALITIES + (
    "3d", "multimodal", "time_series", "graph", "tabular", "point_cloud",
    "bounding_boxes", "segmentation_mask", "action", "regression",
)
# Task words some specs write in a modality list (outputs ["classification"]): each
# is read as the modality it produces, with a note.
MODALITY_TASK_WORDS = (
    ("classification", "label"),
    ("detection", "bounding_boxes"),
    ("object_detection", "bounding_boxes"),
    ("segmentation", "segmentation_mask"),
    ("semantic_segmentation", "segmentation_mask"),
    ("instance_segmentation", "segmentation_mask"),
    ("panoptic_segmentation", "segmentation_mask"),
    ("forecasting", "time_series"),
    ("time_series_forecast", "time_series"),
    ("policy", "action"),
)
OBJECTIVES = (
    "autoregressive", "classification", "diffusion", "contrastive", "masked",
    "regression", "ranking", "pairwise_ranking", "forecasting", "reconstruction",
    "object_detection", "instance_segmentation", "semantic_segmentation",
    "value_based", "policy_gradient", "instruction_tuning",
)
FAMILIES = ("auto", "transformer", "diffusion", "cnn", "unet", "mlp", "gnn", "hybrid")
OBJECTIVES += ("dice",)  # the segmentation loss's dice term
DEVICES = ("edge", "mobile", "cpu", "consumer_gpu", "gpu", "datacenter_gpu")
LATENCY_WORDS = ("real-time", "near-real-time", "interactive", "batch", "offline")
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "relu", "silu", "swiglu", "geglu")
ACTIVATIONS += ("tanh",)
NORMS = ("layernorm", "rmsnorm")
NORMS += ("batchnorm",)  # only the families whose `norms` name it build it
POSITIONS = ("learned", "rope", "sinusoidal", "none")
POOLINGS = ("cls", "cls_pooler", "mean", "eot", "last", "none")
TASKS = (
    "generation", "classification", "embedding", "denoising",
    "regression", "ranking", "retrieval", "object_detection", "instance_segmentation",
    "semantic_segmentation", "panoptic_segmentation", "time_series_forecast", "anomaly_detection",
    "policy_gradient", "value_based", "actor_critic", "model_based", "node_classification",
    "link_prediction", "graph_classification", "recommendation",
)
TASKS += ("object_detection", "instance_segmentation", "semantic_segmentation")
DTYPES = tuple(DTYPE_PRECISION)
PRECISIONS = tuple(PRECISION_BYTES)

# Keys shared by a whole model and by each tower of a multi-tower model.
TOWER_FIELDS = (
    Field("vocab_size", INT, "Token vocabulary size.", minimum=2, maximum=2**22),
    Field("type_vocab_size", INT, "Token-type (segment) vocabulary size; 0 means none.", minimum=0, maximum=1024),
    Field("hidden_size", INT, "Model width d.", minimum=8, maximum=65536),
    Field("layers", INT, "Number of transformer blocks.", minimum=1, maximum=1024),
    Field("heads", INT, "Attention heads.", minimum=1, maximum=1024),
    Field("kv_heads", INT, "Key/value heads (grouped-query attention); equal to heads for multi-head.", minimum=1, maximum=1024),
    Field("head_dim", INT, "Width of one attention head.", minimum=4, maximum=1024),
    Field("ffn_size", INT, "Hidden width of the feed-forward block.", minimum=8, maximum=262144),
    Field("activation", ENUM, "Feed-forward activation (swiglu/geglu are gated).", choices=ACTIVATIONS),
    Field("norm", ENUM, "Normalization layer.", choices=NORMS),
    Field("norm_eps", FLOAT, "Normalization epsilon.", minimum=0.0, maximum=1.0),
    Field("norm_position", ENUM, "Pre-norm or post-norm residual blocks.", choices=("pre", "post")),
    Field("position", ENUM, "Position encoding.", choices=POSITIONS),
    Field("rope_theta", FLOAT, "Rotary embedding base.", minimum=1.0, maximum=1e9),
    Field("pooling", ENUM, "How a sequence becomes one vector.", choices=POOLINGS),
    Field("bias", BOOL, "Biases in linear layers and norms."),
    Field("tie_embeddings", BOOL, "Share the token embedding with the output head."),
    Field(
        "sliding_window", INT,
        "Sliding-window attention (Mistral): each token attends to itself and the sliding_window - 1 tokens "
        "before it; 0 = the whole context. Decoder LMs.", minimum=0, maximum=1 << 24,
    ),
    Field("image_size", INT, "Input image side in pixels.", minimum=8, maximum=8192),
    Field("patch_size", INT, "Patch side in pixels.", minimum=1, maximum=1024),
    Field("channels", INT, "Input image channels.", minimum=1, maximum=64),
)

ARCHITECTURE = _map(
    "architecture",
    "Family and any dimension or convention to pin; everything else is fitted.",
    Field("family", ENUM, "Architecture family; 'auto' picks from modality and objective.", default="auto", choices=FAMILIES),
    _recorded(
        "components", LIST, "Parts of the design, each a label or a `{name, type}` mapping (documentation only).", default=[],
        item=_map("component", "A part of the design.", Field("name", STR, "Its name."), Field("type", STR, "What it is."), scalar_key="name"),
    ),
    *TOWER_FIELDS,
    Field("projection_dim", INT, "Shared embedding width of a dual encoder.", minimum=8, maximum=65536),
    Field("codebooks", INT, "Audio codec codebooks.", minimum=1, maximum=64),
    Field("codebook_size", INT, "Entries per codebook.", minimum=2, maximum=1 << 20),
    Field("latent_channels", INT, "Channels of the denoised sample.", minimum=1, maximum=64),
    Field("sample_size", INT, "Side of the denoised sample.", minimum=4, maximum=4096),
    Field("base_channels", INT, "U-Net channels at the first level.", minimum=8, maximum=8192),
    Field("channel_mults", LIST, "U-Net channel multiplier per level.", item=Field("mult", INT, "", minimum=1, maximum=64)),
    Field("res_blocks", INT, "ResNet blocks per U-Net level.", minimum=1, maximum=16),
    Field("attention_levels", LIST, "U-Net levels with spatial transformers.", item=Field("level", INT, "", minimum=0, maximum=16)),
    Field("transformer_depth", INT, "Transformer blocks per spatial transformer.", minimum=1, maximum=32),
    Field("norm_groups", INT, "GroupNorm groups.", minimum=1, maximum=1024),
    Field("cross_attention_dim", INT, "Width of the conditioning sequence.", minimum=8, maximum=65536),
    Field("qkv_bias", BOOL, "Biases on the attention's q, k and v projections, whatever `bias` says (Qwen2: true with bias false); default: as bias."),
    Field("rope_scaling", ENUM, "Rescaling of the rotary frequencies: none, or llama3 (Llama 3.1's long-context scaling).", choices=("none", "llama3")),
    Field("rope_scaling_factor", FLOAT, "llama3 scaling: the low frequencies are divided by this.", minimum=1.0, maximum=1e6),
    Field("rope_low_freq_factor", FLOAT, "llama3 scaling: wavelengths above rope_original_context / this are scaled.", minimum=1e-6, maximum=1e6),
    Field("rope_high_freq_factor", FLOAT, "llama3 scaling: wavelengths below rope_original_context / this are kept; between, interpolated.", minimum=1e-6, maximum=1e6),
    Field("rope_original_context", INT, "llama3 scaling: the context the model was pretrained at.", minimum=1, maximum=2**31),
    Field("dropout", FLOAT, "Dropout rate during training (MLP and tabular models).", minimum=0.0, maximum=0.9),
    Field("message_passing", ENUM, "Graph layer: GCN, GAT or GIN.", choices=("gcn", "gat", "gin")),
    Field("patch_stride", INT, "Step between time-series patches (patch_size is their length).", minimum=1, maximum=4096),
    Field("num_users", INT, "Users of a recommender (user id vocabulary).", minimum=1, maximum=10**10),
    Field("num_items", INT, "Items of a recommender (item id vocabulary).", minimum=1, maximum=10**10),
    Field("user_features", INT, "Dense user features a recommender reads (0: ids only).", minimum=0, maximum=10**6),
    Field("item_features", INT, "Dense item features a recommender reads (0: ids only).", minimum=0, maximum=10**6),
    Field("frames", INT, "Video: the most frames in a clip (the frame count itself is symbolic).", minimum=1, maximum=4096),
    Field("temporal_layers", INT, "Video: temporal transformer blocks after the per-frame ones.", minimum=1, maximum=256),
    _map("text_encoder", "Text tower of a multi-tower model.", *TOWER_FIELDS),
    _map("image_encoder", "Image tower of a multi-tower model.", *TOWER_FIELDS),
    Field("images", ENUM, "Diffusion: 'pixels' includes the image autoencoder (images in and out), 'latents' the U-Net alone.", choices=("latents", "pixels")),
    _map(
        "autoencoder",
        "Diffusion image autoencoder (SD's AutoencoderKL), built when images are pixels.",
        Field("block_channels", LIST, "Channels per autoencoder level.", item=Field("channels", INT, "", minimum=1, maximum=8192)),
        Field("layers_per_block", INT, "ResNet blocks per encoder level (decoder: one more).", minimum=1, maximum=16),
        Field("norm_groups", INT, "GroupNorm groups.", minimum=1, maximum=1024),
        Field("scaling_factor", FLOAT, "Latents are the encoder's mean times this.", minimum=0.0, maximum=100.0),
    ),
)

SPEC = _map(
    "spec",
    "A MetaGen spec.",
    Field("metagen_version", STR, "Spec language version.", choices=("1.0",), required=True),
    Field("name", STR, "Model name: free text; a class name is derived from it.", required=True),
    Field("description", STR, "Free text.", default=""),
    Field("license", STR, "The model's license, as the model card's front matter states it (a Hugging Face license id: apache-2.0, mit, other, ...)."),
    _recorded("version", STR, "The spec file's own version (free text, e.g. \"1.0.0\")."),
    _map(
        "modality",
        "What goes in and what comes out.",
        Field("inputs", LIST, "Input modalities.", item=Field("modality", ENUM, "", choices=MODALITIES, open_choices=True, aliases=MODALITY_TASK_WORDS), required=True),
        Field("outputs", LIST, "Output modalities.", item=Field("modality", ENUM, "", choices=MODALITIES, open_choices=True, aliases=MODALITY_TASK_WORDS), required=True),
        required=True,
    ),
    _map(
        "task",
        "What the model is for.",
        Field("type", ENUM, "Task type; follows from modality and objective, and a value that contradicts the model built is a warning.", choices=TASKS),
        Field("num_classes", INT, "Classes of a classifier.", minimum=2, maximum=10**7),
        _recorded("domain", STR, "Application domain (free text: generic, finance, coco, ...)."),
        Field("num_outputs", INT, "Regression targets, or forecast channels of a time series.", minimum=1, maximum=10**6),
        Field("horizon", INT, "Time-series steps to forecast.", minimum=1, maximum=10**6),
        Field("lookback", INT, "Time-series steps the model reads.", minimum=1, maximum=10**6),
        Field("action_space", ENUM, "Discrete (num_actions) or continuous (action_dim) actions.", choices=("discrete", "continuous")),
        Field("num_actions", INT, "Actions of a discrete action space.", minimum=2, maximum=10**6),
        Field("action_dim", INT, "Width of a continuous action.", minimum=1, maximum=10**6),
        Field("node_features", INT, "Features per graph node.", minimum=1, maximum=10**6),
        Field("edge_features", INT, "Features per graph edge.", minimum=1, maximum=10**6),
        Field("num_features", INT, "Numeric input columns of a table (or the observation width of an agent).", minimum=1, maximum=10**6),
        Field("numeric_features", LIST, "Named numeric columns of a table; their count is num_features.", item=Field("column", STR, "")),
        Field(
            "categorical_features", LIST, "Categorical columns of a table as \"name:cardinality\" (\"city:120\"); each is an int64 input of ids in [0, cardinality).",
            item=Field("column", STR, ""),
        ),
        Field("num_anchors", INT, "Object queries (or anchors) of a detector.", minimum=1, maximum=10**5),
        Field("mask_resolution", INT, "Side of a predicted mask in pixels.", minimum=1, maximum=8192),
        Field("embedding_dim", INT, "Width of an output embedding.", minimum=1, maximum=65536),
    ),
    _map(
        "constraints",
        "Budgets the fitted model must meet.",
        _map(
            "parameter_budget",
            "Bounds on the parameter count.",
            Field("max", PARAMS, "Most parameters allowed. Default: the task's (docs/families.md, per-task defaults; 1B for a language model).", default="1B"),
            Field("min", PARAMS, "Fewest parameters wanted; default 90% of max."),
        ),
        Field("latency", LATENCY, "A latency class or an explicit bound (\"10ms\", \"60 tok/s\").", default="batch"),
        Field("device", ENUM, "Target device class.", default="consumer_gpu", choices=DEVICES),
        Field("memory_budget", BYTES, "Inference memory: weights + KV cache + activations. Default: the device's capacity."),
        Field("context_window", CONTEXT, "Longest sequence, in tokens (k = 1024).", default="4k"),
        Field("throughput", RATE, "Required throughput (\"60 tok/s\", \"2 img/s\")."),
        Field(
            "precision", ENUM,
            "Deployment precision of the weights, for inference memory and latency (int8 is weight-only: activations "
            "and KV cache stay fp16). Default by device: int8 on edge and mobile, bf16 elsewhere (docs/cost_model.md).",
            choices=PRECISIONS,
        ),
        Field("dtype", ENUM, "Older spelling of precision, in NumPy's words; precision wins when both are given.", choices=DTYPES),
        Field("image_size", INT, "Input image side in pixels; sets architecture.image_size when that is not given.", minimum=8, maximum=8192, arch_key="image_size"),
        Field("patch_size", INT, "Patch side in pixels; sets architecture.patch_size when that is not given.", minimum=1, maximum=1024, arch_key="patch_size"),
        Field("latent_size", INT, "Side of a diffusion model's latent; sets architecture.sample_size when that is not given.", minimum=4, maximum=4096, arch_key="sample_size"),
    ),
    _map(
        "training",
        "How the model is trained.",
        Field("objective", LIST, "Training objectives.", item=Field("objective", ENUM, "", choices=OBJECTIVES)),
        _map(
            "data",
            "Training data.",
            Field("sources", LIST, "Data sources.", default=[], item=Field("source", STR, "")),
            Field("size", DATA_SIZE, "Amount of data (\"100B tokens\", \"1.28M samples\")."),
            _map(
                "governance",
                "Data governance.",
                Field("pii", STR, "PII handling."),
                Field("copyright", STR, "Copyright status."),
            ),
        ),
        _map(
            "compute",
            "Training compute.",
            Field("hardware", HARDWARE, "Accelerators (\"8xA100\", \"512xH100\")."),
            Field("duration", DURATION, "Wall-clock budget (\"5 days\")."),
        ),
        _map(
            "alignment",
            "Post-training alignment.",
            Field("method", LIST, "Methods, e.g. sft, rlhf, rlaif, dpo.", item=Field("method", STR, ""), one_or_many=True),
            Field("data", STR, "Alignment data."),
            _recorded("policy", STR, "Alignment policy (free text)."),
        ),
        _map(
            "config",
            "Optimizer and schedule.",
            Field("batch_size", INT, "Global batch size.", minimum=1, maximum=10**7),
            Field("learning_rate", FLOAT, "Peak learning rate.", minimum=0.0, maximum=10.0),
            Field("epochs", INT, "Passes over the data.", minimum=1, maximum=10**6),
            Field("steps", INT, "Optimizer steps.", minimum=1, maximum=10**9),
            Field("weight_decay", FLOAT, "AdamW weight decay.", minimum=0.0, maximum=10.0),
            Field("warmup", INT, "Warmup steps.", minimum=0, maximum=10**9),
            Field("optimizer", ENUM, "Optimizer.", choices=("adamw", "sgd", "adafactor")),
            Field("schedule", ENUM, "Learning-rate schedule.", choices=("cosine", "linear", "constant")),
            Field("loss", ENUM, "Regression loss: mean squared error or Huber (delta 1).", choices=("mse", "huber")),
            Field("warmup_steps", INT, "Older spelling of warmup (the original vocabulary's); warmup wins when both are given.", minimum=0, maximum=10**9),
            _recorded("warmup_epochs", INT, "Warmup epochs.", minimum=0, maximum=10**6),
            _recorded("ema_decay", FLOAT, "Decay of an exponential moving average of the weights.", minimum=0.0, maximum=1.0),
            _recorded("noise_schedule", STR, "Diffusion noise schedule (linear, cosine, scaled_linear, ...)."),
            _recorded("timesteps", INT, "Diffusion training timesteps.", minimum=1, maximum=10**6),
            _recorded("unconditional_probability", FLOAT, "Probability of dropping the condition (classifier-free guidance).", minimum=0.0, maximum=1.0),
            _recorded("data_augmentation", LIST, "Augmentations.", item=Field("augmentation", STR, ""), one_or_many=True),
        ),
    ),
    ARCHITECTURE,
    _map(
        "outputs",
        "What to emit.",
        Field("targets", LIST, "Backends `metagen synth` emits.", default=list(registry.names()), item=Field("target", ENUM, "", choices=registry.names())),
        _recorded("artifacts", LIST, "Artifacts the original MetaGen emitted (pytorch_skeleton, model_card, ...).", item=Field("artifact", STR, ""), one_or_many=True),
    ),
    _map(
        "evaluation",
        "How the model is evaluated (recorded, not run).",
        Field("metrics", LIST, "Metric names.", default=[], item=Field("metric", STR, "")),
        Field("benchmarks", LIST, "Benchmark names.", default=[], item=Field("benchmark", STR, "")),
        _recorded("baselines", LIST, "Baseline model names.", item=Field("baseline", STR, ""), one_or_many=True),
    ),
    _map(
        "reproducibility",
        "Seeds and determinism.",
        Field("seed", INT, "Default seed for initial weights.", default=0, minimum=0, maximum=2**63 - 1),
        Field("deterministic", BOOL, "Ask training programs for deterministic kernels.", default=True),
        _recorded("determinism", STR, "Determinism statement (free text; `deterministic` is what programs read)."),
    ),
)


def lookup(path: str) -> Field | None:
    """The field at a dotted path, e.g. 'constraints.parameter_budget.max'."""
    node = SPEC
    for part in path.split("."):
        node = node.member(part) if node.kind == MAP else None
        if node is None:
            return None
    return node


def to_json_schema() -> dict:
    """JSON Schema (2020-12) of the YAML spec language."""

    def conv(f: Field) -> dict:
        out: dict[str, Any] = {"description": f.doc} if f.doc else {}
        if f.kind == MAP:
            obj: dict[str, Any] = {"type": "object"}
            obj["properties"] = {m.name: conv(m) for m in f.fields}
            obj["additionalProperties"] = False
            req = [m.name for m in f.fields if m.required]
            if req:
                obj["required"] = req
            if f.scalar_key:  # one value means {scalar_key: value}
                out["anyOf"] = [obj, conv(f.member(f.scalar_key))]
            else:
                out.update(obj)
        elif f.kind == LIST:
            if f.one_or_many:
                out["anyOf"] = [{"type": "array", "items": conv(f.item)}, conv(f.item)]
            else:
                out["type"] = "array"
                out["items"] = conv(f.item)
        elif f.kind == ENUM:
            if f.open_choices:
                out["type"] = "string"
                out["examples"] = list(f.choices) + [word for word, _ in f.aliases]
            else:
                out["enum"] = list(f.choices)
        elif f.kind == STR:
            out["type"] = "string"
            if f.choices:
                out["enum"] = list(f.choices)
        elif f.kind == INT:
            out["type"] = "integer"
        elif f.kind == FLOAT:
            out["type"] = "number"
        elif f.kind == BOOL:
            out["type"] = "boolean"
        elif f.kind == PARAMS:
            out["type"] = ["string", "integer"]
            out["pattern"] = r"^[0-9.]+(e[0-9]+)?\s*[KMBTkmbt]?$"
        elif f.kind == BYTES:
            out["type"] = "string"
            out["pattern"] = r"^[0-9.]+\s*([KMGT]i?B|B)$"
        elif f.kind == CONTEXT:
            out["type"] = ["string", "integer"]
            out["pattern"] = r"^([0-9.]+\s*[kKmM]?|∞|infinite)$"
        else:
            out["type"] = "string"
        if f.minimum is not None:
            out["minimum"] = f.minimum
        if f.maximum is not None:
            out["maximum"] = f.maximum
        if f.default is not None and f.kind != MAP:
            out["default"] = f.default
        if f.recorded:
            out["x-metagen-recorded"] = True  # kept in spec_resolved.yaml; cannot change the model
        return out

    schema = conv(SPEC)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://metagen.dev/schema/msl-1.0.json",
        "title": "MetaGen Spec Language 1.0",
        **schema,
    }
    return schema
