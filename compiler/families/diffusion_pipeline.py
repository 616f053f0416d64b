"""The diffusion model's pipeline parts as models of their own.

A compiled diffusion model is one IR model whose forward is one denoising step
(text encoder + U-Net). Sampling also needs the text encoder alone (to encode the
prompt once) and, when the images are pixels, the autoencoder's encoder and
decoder, which are members of the top module its forward does not call.
`pipeline_parts` cuts the model into those parts, each a `Model` any backend
lowers: the ONNX pipeline folder is one graph per part, laid out as diffusers'
ONNX pipelines are (text_encoder/, unet/, vae_encoder/, vae_decoder/), and the
tests compare the parts across backends. Canonical weight names are kept: a
part's weights are the whole model's under the same names.
"""

from __future__ import annotations

import dataclasses

from metagen.ir.graph import InputSpec, Model, ModuleDef, Node, Repeat, Sub, Value

AUTOENCODER_PARTS = ("vae_encoder", "vae_decoder")
PART_FAMILY = "diffusion_pipeline_part"
TEXT_INPUTS = ("input_ids", "attention_mask")  # the text encoder's, in its order; the U-Net part has neither


def _reachable(model: Model, top: str) -> dict[str, ModuleDef]:
    """`top` and the modules it uses, in the model's (dependencies-first) order."""
    seen = {top}
    todo = [top]
    while todo:
        m = model.modules[todo.pop()]
        for child in m.children.values():
            if isinstance(child, (Sub, Repeat)) and child.module not in seen:
                seen.add(child.module)
                todo.append(child.module)
    return {name: m for name, m in model.modules.items() if name in seen}


def _part(model: Model, top: ModuleDef, inputs: list[InputSpec], outputs: list[str], doc: str) -> Model:
    modules = dict(model.modules)
    modules[top.name] = top
    # Not the family's own name: a part has no parts, and no sample() of its own.
    part = dataclasses.replace(model, name=top.name, modules=modules, top=top.name, inputs=inputs, family=PART_FAMILY)
    part.modules = _reachable(part, top.name)
    top.output_names = list(outputs)
    top.doc = doc
    used = {d for i in inputs for d in i.type.shape if isinstance(d, str)}
    part.symbols = {k: v for k, v in model.symbols.items() if k in used}
    part.examples = {k: v for k, v in model.examples.items() if k in used}
    return part


def _child_as_top(model: Model, child: str, input_specs: list[InputSpec], outputs: list[str], doc: str) -> Model:
    """A top module that holds the child under its own name and calls it, so the
    part's weights keep their canonical names (`text_encoder.*`, `vae_decoder.*`)."""
    sub = model.top_module.children[child]
    m = model.modules[sub.module]
    inputs = [Value(v.type, v.hint) for v in m.inputs]
    results = [Value(v.type, name) for v, name in zip(m.outputs, outputs)]
    call = Node("call", "call", list(inputs), {}, results, target=child, loc=m.loc)
    for r in results:
        r.producer = call
    top = ModuleDef(
        f"{m.name}Part", children={child: sub}, inputs=inputs, nodes=[call], outputs=results, loc=m.loc,
    )
    return _part(model, top, input_specs, outputs, doc)


def _unet_on_context(model: Model) -> Model:
    """The top module with the text encoder's call cut off: its result (the context)
    becomes the input `encoder_hidden_states`."""
    src = model.top_module
    call = next(n for n in src.nodes if n.kind == "call" and n.target == "text_encoder")
    (context,) = call.results
    hidden = Value(context.type, "encoder_hidden_states")
    remap = {id(context): hidden}
    nodes = []
    for n in src.nodes:
        if n is call:
            continue
        nodes.append(dataclasses.replace(n, operands=[remap.get(id(v), v) for v in n.operands]))
    inputs = [v for v in src.inputs if v.hint not in TEXT_INPUTS] + [hidden]
    children = {k: c for k, c in src.children.items() if k not in ("text_encoder", *AUTOENCODER_PARTS)}
    top = dataclasses.replace(src, name=f"{src.name}UNet", children=children, inputs=inputs, nodes=nodes)
    specs = [i for i in model.inputs if i.name not in TEXT_INPUTS]
    specs.append(InputSpec("encoder_hidden_states", hidden.type, "normal", 0.0, 0.0, "the text encoder's hidden states"))
    return _part(model, top, specs, list(model.output_names), "One denoising step on precomputed text states.")


def pipeline_parts(model: Model) -> dict[str, Model]:
    """text_encoder, unet and (when the images are pixels) vae_encoder and
    vae_decoder, each a model of its own with the canonical weight names."""
    if model.family != "diffusion_unet":
        raise ValueError(f"pipeline_parts needs a diffusion model, not {model.family}")
    text_specs = [next(i for i in model.inputs if i.name == name) for name in TEXT_INPUTS]
    text = _child_as_top(model, "text_encoder", text_specs, ["last_hidden_state"], "The prompt's hidden states.")
    parts = {"text_encoder": text, "unet": _unet_on_context(model)}
    children = model.top_module.children
    if all(p in children for p in AUTOENCODER_PARTS):
        enc = model.modules[children["vae_encoder"].module]
        dec = model.modules[children["vae_decoder"].module]
        parts["vae_encoder"] = _child_as_top(
            model, "vae_encoder",
            [InputSpec("image", enc.inputs[0].type, "uniform", -1.0, 1.0, "image in [-1, 1], float32 [batch, 3, H, W]")],
            ["moments"], "Image to the latent distribution's mean and log-variance (concatenated on channels).",
        )
        parts["vae_decoder"] = _child_as_top(
            model, "vae_decoder",
            [InputSpec("latents", dec.inputs[0].type, "normal", 0.0, 0.0, "latents (the encoder's, not scaled)")],
            ["image"], "Latents to an image, about [-1, 1].",
        )
    return parts
