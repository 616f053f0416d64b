"""Reinforcement-learning agents (`-> action`): a Q-network for value-based
training (DQN) and an actor-critic for policy-gradient training (PPO), over image
observations (stacked frames, the Nature/Atari CNN) or vector observations (MLPs).

- DQN (Mnih et al. 2015, "Human-level control through deep reinforcement
  learning", Nature 518): frames [batch, 4, 84, 84] -> conv 8x8/4 (32) -> conv 4x4/2
  (64) -> conv 3x3/1 (64) -> linear 512 -> linear num_actions, ReLU between, output
  `q_values`. With 18 actions: 1,693,362 parameters. For vector observations the
  trunk is an MLP of `layers` blocks of `hidden_size`.
- Actor-critic (PPO, Schulman et al. 2017, arXiv:1707.06347, as Stable-Baselines3's
  and CleanRL's MlpPolicy build it): separate actor and critic MLPs (tanh), the
  actor's head `logits` [batch, num_actions] (discrete) or `mean` [batch,
  action_dim] and a learned state-independent `log_std` [action_dim] (continuous,
  a diagonal Gaussian), the critic's `value` [batch]. Over frames, both heads share
  the Nature CNN trunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key  # noqa: F401
from metagen.compiler.families.blocks import class_name, inference, read_spec, training, weight_nbytes
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import ZEROS, InputSpec, Model, ModuleDef, Value
from metagen.ir.types import DType, TensorType

DEFAULT_ACTIONS = 4
DEFAULT_OBSERVATION = 16
NATURE_CNN = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (channels, kernel, stride)


@dataclass
class AgentConfig(ArchConfig):
    hidden_size: int | None = spec_key()
    layers: int | None = spec_key()
    activation: str | None = spec_key()
    image_size: int | None = spec_key()
    channels: int | None = spec_key()
    algorithm: str = derived("dqn")  # or "ppo"
    observation: str = derived("vector")  # or "image"
    observation_dim: int = derived(DEFAULT_OBSERVATION)
    action_space: str = derived("discrete")
    num_actions: int = derived(DEFAULT_ACTIONS)
    action_dim: int = derived(1)
    conv: list = derived([list(c) for c in NATURE_CNN])


def conv_side(a: Any) -> int:
    side = a["image_size"]
    for _, k, s in a["conv"]:
        side = (side - k) // s + 1
    return side


class Agent(Family):
    name = "rl_agent"
    pipeline_tag = "reinforcement-learning"
    doc = "DQN Q-network or PPO actor-critic over frames (Nature CNN) or vectors (MLP)."
    inputs_doc = "observation: float32 [batch, channels, image_size, image_size] frames in [0, 1], or [batch, num_features]"
    outputs_doc = "q_values [batch, num_actions] (DQN); logits or mean + log_std, and value [batch] (PPO)"
    msl_family_name = "mlp"
    accepts_families = ("auto", "mlp", "cnn")
    built = "a reinforcement-learning agent"
    rules = (
        Rule(("image",), ("action",), ("value_based", None), "DQN, Nature CNN"),
        Rule(("image",), ("action",), ("policy_gradient",), "PPO actor-critic on the Nature CNN"),
        Rule(("tabular",), ("action",), ("value_based",), "DQN over a vector observation"),
        Rule(("tabular",), ("action",), ("policy_gradient", None), "PPO actor-critic MLPs"),
    )
    tasks = ("value_based", "policy_gradient", "actor_critic")
    unit = UnitOfWork("step", "sample")
    default_budget = 2_000_000
    default_budget_source = "the Nature DQN (1.7M with 18 actions; Mnih et al. 2015)"
    config = AgentConfig
    tiny_doc = "36 x 36 frames, convolutions of 8/16/16 channels, hidden 32; vectors of at most 8, 2 blocks of 32; at most 4 actions"

    def configure(self, ctx: CompileContext) -> None:
        cfg = AgentConfig()
        image = "image" in (ctx.spec.modality.inputs or [])
        cfg.observation = "image" if image else "vector"
        objective = objective_name_of_agent(ctx, image)
        cfg.algorithm = "dqn" if objective == "value_based" else "ppo"
        cfg.update(activation="relu" if image or cfg.algorithm == "dqn" else "tanh", image_size=84, channels=4)
        cfg.hidden_size = 512 if image else None
        read_spec(ctx, cfg)
        task = ctx.spec.task
        space = task.action_space or ("continuous" if task.action_dim and not task.num_actions else "discrete")
        cfg.action_space = space
        if space == "continuous":
            if cfg.algorithm == "dqn":
                ctx.sink.error(task.loc("action_space"), "task.action_space continuous: a DQN picks among discrete actions; use policy_gradient")
            cfg.action_dim = task.action_dim or 1
        else:
            cfg.num_actions = task.num_actions or DEFAULT_ACTIONS
            if task.num_actions is None:
                ctx.sink.note(task.loc(), f"task.num_actions is not given; the agent has {DEFAULT_ACTIONS} actions")
        cfg.observation_dim = task.num_features or DEFAULT_OBSERVATION
        if not image and task.num_features is None:
            ctx.sink.note(task.loc(), f"task.num_features is not given; observations have {DEFAULT_OBSERVATION} values")
        if image and conv_side(cfg) < 1:
            ctx.sink.error(self.key_loc(ctx, "image_size"), f"architecture.image_size {cfg.image_size} is too small for the Nature CNN (at least 36)")
        ctx.arch = cfg

    def objective(self, ctx: CompileContext) -> str:
        return objective_name_of_agent(ctx, ctx.arch.observation == "image")

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        free_width = "hidden_size" not in ctx.pinned
        depth = [] if ctx.arch.observation == "image" or "layers" in ctx.pinned else ["layers"]
        if not free_width and not depth:
            return None
        widths = [{"hidden_size": d} for d in (range(32, 8192 + 1, 32) if free_width else [ctx.arch["hidden_size"]])]
        return Knobs(widths, depth, ideal_depth=lambda w: 2.0)

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(hidden_size=32, layers=2, image_size=36, conv=[[8, 8, 4], [16, 4, 2], [16, 3, 1]])
        a["observation_dim"] = min(a["observation_dim"], 8)
        a["num_actions"] = min(a["num_actions"], 4)
        a["action_dim"] = min(a["action_dim"], 3)
        a["channels"] = min(a["channels"], 4)

    def finalize(self, ctx: CompileContext) -> str | None:
        if ctx.arch.observation == "image":
            ctx.arch["layers"] = 1
        return None

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        top = mb.module(class_name(ctx.spec.name), doc="DQN Q-network." if a.algorithm == "dqn" else "Actor-critic.")
        if a.observation == "image":
            obs_type = TensorType(DType.f32, ("batch", a.channels, a.image_size, a.image_size))
            spec = InputSpec("observation", obs_type, "uniform", 0.0, 1.0, "stacked frames, channels first, scaled to [0, 1]")
        else:
            obs_type = TensorType(DType.f32, ("batch", a.observation_dim))
            spec = InputSpec("observation", obs_type, "normal", doc="the observation vector")
        obs = top.input("observation", obs_type)
        outs, names = [], []
        if a.algorithm == "dqn":
            top.sub("trunk", trunk(mb, a, obs_type, "Trunk"))
            top.layer("q_head", "linear", in_features=a.hidden_size, out_features=a.num_actions)
            outs.append(top.call("q_head", top.call("trunk", obs, hint="h"), hint="q_values"))
            names.append("q_values")
        else:
            if a.observation == "image":
                top.sub("trunk", trunk(mb, a, obs_type, "Trunk"))
                h_pi = h_v = top.call("trunk", obs, hint="h")
            else:
                top.sub("actor", trunk(mb, a, obs_type, "Actor"))
                top.sub("critic", trunk(mb, a, obs_type, "Critic"))
                h_pi, h_v = top.call("actor", obs, hint="h_pi"), top.call("critic", obs, hint="h_v")
            if a.action_space == "discrete":
                top.layer("policy_head", "linear", in_features=a.hidden_size, out_features=a.num_actions, init_std=0.01)
                outs.append(top.call("policy_head", h_pi, hint="logits"))
                names.append("logits")
            else:
                top.layer("policy_head", "linear", in_features=a.hidden_size, out_features=a.action_dim, init_std=0.01)
                outs.append(top.call("policy_head", h_pi, hint="mean"))
                log_std = top.param("policy_log_std", (a.action_dim,), ZEROS, hint="log_std")
                outs.append(top.op("add", top.op("scale", outs[-1], factor=0.0, hint="zero"), log_std, hint="log_std"))
                names += ["mean", "log_std"]
            top.layer("value_head", "linear", in_features=a.hidden_size, out_features=1, init_std=1.0 / a.hidden_size ** 0.5)
            outs.append(top.op("select", top.call("value_head", h_v, hint="v"), axis=-1, index=0, hint="value"))
            names.append("value")
        top_def = top.ret(*outs, names=names)
        config = {"algorithm": a.algorithm, "observation": a.observation, "hidden_size": a.hidden_size, "activation": a.activation}
        if a.observation == "image":
            config.update(image_size=a.image_size, channels=a.channels, conv=[list(c) for c in a.conv])
        else:
            config.update(layers=a.layers, observation_dim=a.observation_dim)
        config.update({"num_actions": a.num_actions} if a.action_space == "discrete" else {"action_dim": a.action_dim})
        config["action_space"] = a.action_space
        return mb.finish(
            top_def, name=top_def.name, spec_name=ctx.spec.name, inputs=[spec], config=config, family=self.name,
            symbols={"batch": "batch size (environment steps)"},
        )

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """Weights plus one observation's activations (every feature map of the CNN)."""
        a = ctx.arch
        if a.observation == "image":
            side, acts = a.image_size, a.channels * a.image_size ** 2
            for ch, k, s in a.conv:
                side = (side - k) // s + 1
                acts += ch * side * side
        else:
            acts = a.observation_dim + 2 * a.hidden_size * (a.layers + 1)
        acts += 2 * a.hidden_size
        return {"inference": inference(params * weight_nbytes(ctx), 0, acts * 4), "training": training(params, 2 * acts, 2 * acts)}


def objective_name_of_agent(ctx: CompileContext, image: bool) -> str:
    """The spec's objective, or the default by observation (DQN for frames, PPO for vectors)."""
    training_section = getattr(ctx.spec, "training", None)
    names = list(training_section.get("objective") or []) if training_section is not None else []
    return names[0] if names else ("value_based" if image else "policy_gradient")


def trunk(mb: ModelBuilder, a: Any, obs_type: TensorType, name: str) -> ModuleDef:
    """The Nature CNN to `hidden_size` features, or an MLP of `layers` blocks."""
    b = mb.module(name, doc="Nature CNN trunk." if a["observation"] == "image" else f"MLP ({a['activation']}).")
    x = b.input("x", obs_type)
    act = a["activation"]
    if a["observation"] == "image":
        ch = a["channels"]
        for i, (out, k, s) in enumerate(a["conv"]):
            b.layer(f"conv{i}", "conv2d", in_channels=ch, out_channels=out, kernel=k, stride=s)
            x = b.op(act, b.call(f"conv{i}", x, hint="x"), hint="x")
            ch = out
        flat = ch * conv_side(a) ** 2
        x = b.op("reshape", x, shape=(-1, flat), hint="x")
        b.layer("fc", "linear", in_features=flat, out_features=a["hidden_size"])
        return b.ret(b.op(act, b.call("fc", x, hint="h"), hint="h"))
    width = a["observation_dim"]
    for i in range(a["layers"]):
        b.layer(f"fc{i}", "linear", in_features=width, out_features=a["hidden_size"])
        x = b.op(act, b.call(f"fc{i}", x, hint="h"), hint="h")
        width = a["hidden_size"]
    return b.ret(x)
