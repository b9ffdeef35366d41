"""The Left Brain one stock decoder layer at a time, for ``cross_attention: bidirectional``.

In the bidirectional ablation the Left's layer ``l`` attends to the Right's layer-``l`` keys/values, and the Right's
layer ``l`` to the Left's: the two brains must advance in lockstep. The Right keeps its stock forward (so hosts,
gradient checkpointing and DeepSpeed see the usual model); the Left is driven from the Right's attention function,
one layer at a time (``AsyMoTContext.advance_left``).

No decoder code is copied. The Left's stock forward runs until its first decoder layer is called: everything the
stock text model prepares for its layers (the embeddings with the image features merged in, RoPE cos/sin, masks,
positions, the AsyMoT context) is taken from that call, and the forward is stopped there. Each step then calls the
stock decoder layer module with it. What the stock text model's loop does between layers is one thing, Qwen3-VL's
DeepStack (visual features added to the hidden states after the first layers), done with the stock model's own
``_deepstack_process``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .asymot_attention import AsyMoTContext, LeftKeysValuesComplete


class _LayerInputsCaptured(Exception):
    """Stops the Left's stock forward at its first decoder layer, once that layer's inputs are captured."""


class LeftStepper:
    """Runs ``core``'s text decoder (a ``Qwen*VLModel``) layer by layer on demand.

    Construct inside the same vision-feature block as the Right (see ``image_features_computed_once``): the Left's
    vision tower runs here. ``grad``: the Left may record a graph (``left_trainable``); else it runs under no_grad.
    """

    def __init__(self, core: nn.Module, tensors: dict, context: AsyMoTContext, grad: bool):
        text = core.language_model
        if getattr(text.config, "use_sliding_window", False):  # every layer is stepped with the first one's mask
            raise NotImplementedError("cross_attention='bidirectional' needs a text model "
                                      "without sliding-window layers (text_config.use_sliding_window)")
        self.text, self.layers, self.grad = text, text.layers, grad
        captured: dict = {}

        def on_text(module, args, kwargs):
            captured["text"] = kwargs

        def on_first_layer(module, args, kwargs):
            captured["layer"] = (args, dict(kwargs))
            raise _LayerInputsCaptured

        hooks = [text.register_forward_pre_hook(on_text, with_kwargs=True),
                 self.layers[0].register_forward_pre_hook(on_first_layer, with_kwargs=True)]
        try:
            with no_grad_unless(grad):
                core(**tensors, use_cache=False, asymot_context=context)
        except _LayerInputsCaptured:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        if "layer" not in captured:
            raise RuntimeError("the Left Brain's forward ended without calling its first decoder layer")
        args, self.kwargs = captured["layer"]
        if args:
            self.hidden, self.args = args[0], args[1:]
        else:
            self.hidden, self.args = self.kwargs.pop("hidden_states"), ()
        self.deepstack = captured["text"].get("deepstack_visual_embeds")
        self.visual_pos_masks = captured["text"].get("visual_pos_masks")
        self.next_layer = 0
        self.complete = False
        context.advance_left = self.run_through

    def run_through(self, layer_idx: int) -> None:
        """Run the Left's layers up to ``layer_idx`` (its attention records that layer's K/V)."""
        with no_grad_unless(self.grad):
            while self.next_layer <= layer_idx and not self.complete:
                i = self.next_layer
                self.next_layer += 1
                try:
                    out = self.layers[i](self.hidden, *self.args, **self.kwargs)
                except LeftKeysValuesComplete:  # the last K/V the Right needs are recorded
                    self.complete = True
                    return
                self.hidden = out[0] if isinstance(out, tuple) else out  # 4.57's Qwen2.5-VL layers return tuples
                if self.deepstack is not None and i < len(self.deepstack):
                    self.hidden = self.text._deepstack_process(self.hidden, self.visual_pos_masks, self.deepstack[i])


def no_grad_unless(grad: bool):
    """``torch.no_grad()`` for a frozen Left; for a trainable one, whatever grad mode the caller runs in."""
    return contextlib.nullcontext() if grad else torch.no_grad()
