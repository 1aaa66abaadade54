"""`ABStudio`: two studio views side by side behind one set of controls, compared pixel by pixel.

Both sides get the same prompt, seed and settings and differ in one thing: the negative prompt
(one pipeline) or the pipeline (e.g. bf16 vs NF4). Taught in notebook 06.
"""

from __future__ import annotations

import html
import re
import threading

import ipywidgets as widgets
import numpy as np

from ..generation.text_to_image import GenerationResult
from .engine import StudioEngine
from .view import DEFAULT_PROMPT, Studio, full_width, guarded
from .widget_versions import ShowsWidget, titled_accordion


def pixel_difference(image_a, image_b) -> float:
    """Mean absolute difference of two same-size images, per RGB value on the 0-255 scale (0: identical)."""
    a = np.asarray(image_a.convert("RGB"), dtype=np.int16)
    b = np.asarray(image_b.convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare a {a.shape[1]}x{a.shape[0]} image with a {b.shape[1]}x{b.shape[0]} one.")
    return float(np.abs(a - b).mean())


class ABStudio(ShowsWidget):
    """Show two studio panels side by side at the same seed and settings (make it a cell's last line).

    One pipeline: the sides differ in their negative prompts (`negative_prompt_a`, `negative_prompt_b`;
    boxes "Negative A" and "Negative B"). Two pipelines (`pipe_b`, loaded with `keep_previous=True`):
    the sides differ in the pipeline, with one negative prompt for both. Other options as for
    `Studio`: prompt, save_dir, history_size, cache_size, preview, preview_decoder. Side A's controls are the shared
    ones; `a` and `b` are ordinary `Studio`s (each with its engine), so queueing, cancel, caches and
    errors work as there; on one pipeline its lock runs their images one after the other.
    Drive it from code like a Studio: set widget values, `generate_button.click()`, `wait_idle()`."""

    def __init__(self, pipe_a, pipe_b=None, *, prompt: str = DEFAULT_PROMPT, negative_prompt_a: str = "",
                 negative_prompt_b: str = "", **options):
        if "negative_prompt" in options:
            raise TypeError("ABStudio takes negative_prompt_a and negative_prompt_b (one per side), not "
                            "negative_prompt: e.g. ABStudio(pipe, negative_prompt_a='', negative_prompt_b='blurry').")
        self.compare_pipelines = pipe_b is not None
        if self.compare_pipelines and negative_prompt_b:
            raise ValueError("Compare two pipelines or two negative prompts, not both: with pipe_b, "
                             "leave negative_prompt_b out (negative_prompt_a is used on both sides).")
        if pipe_b is not None and pipe_b is pipe_a:
            raise ValueError("pipe_b is pipe_a: both sides would show the same image. To compare two negative "
                             "prompts on one pipeline, leave pipe_b out and pass negative_prompt_a and negative_prompt_b.")
        self.a = Studio(pipe_a, prompt=prompt, negative_prompt=negative_prompt_a, **options)
        self.b = Studio(pipe_b if self.compare_pipelines else pipe_a, prompt=prompt,
                        negative_prompt=negative_prompt_a if self.compare_pipelines else negative_prompt_b, **options)
        self.sides = (self.a, self.b)
        self.difference: float | None = None  # mean absolute pixel difference of the pair shown, 0-255
        self.last_error: BaseException | None = None
        self._compare_lock = threading.Lock()
        a, b = self.sides
        # The shared controls are side A's widgets, named here too: ab.guidance, ab.seed...
        self.prompt, self.guidance, self.steps, self.seed, self.size = a.prompt, a.guidance, a.steps, a.seed, a.size

        self.generate_button = widgets.Button(description="Generate A and B", button_style="primary", icon="play")
        self.cancel_button = widgets.Button(description="Cancel", button_style="warning", icon="stop")
        self.auto = widgets.Checkbox(value=False, description="auto-generate when a slider is released", indent=False)
        self.summary = widgets.HTML("<i>no pair yet</i>")
        self.summary.add_class("sd35-ab-summary")
        self.generate_button.on_click(self._guarded(lambda _: self.request()))
        self.cancel_button.on_click(self._guarded(lambda _: self.cancel()))
        for control in (a.guidance, a.steps, a.seed, a.size):
            control.observe(self._guarded(self._on_setting_change), names="value")
        for side in self.sides:
            side.on_show = self._compare

        negatives = [a.negative_prompt]
        if not self.compare_pipelines:
            a.negative_prompt.description, b.negative_prompt.description = "Negative A", "Negative B"
            negatives.append(b.negative_prompt)
        controls = widgets.VBox([
            a.prompt, *negatives,
            full_width(a.guidance), full_width(a.steps),
            widgets.HBox([a.seed, a.random_seed_button, a.seed_lock, a.size]),
            widgets.HBox([self.generate_button, self.cancel_button, self.auto]),
            *(widgets.HBox([widgets.Label(name, layout=widgets.Layout(width="20px")), side.progress, side.progress_label])
              for name, side in zip("AB", self.sides)),
        ])
        panels = [
            widgets.VBox([widgets.HTML(f"<b>{name}</b>"), side.image, side.save_button, side.recipe_view, side.message])
            for name, side in zip("AB", self.sides)
        ]
        self.widget = widgets.VBox([
            controls,
            widgets.HBox(panels),
            self.summary,
            titled_accordion([a.log, b.log], ["Log A (tracebacks)", "Log B (tracebacks)"]),
        ])
        self.widget.add_class("sd35-ab-studio")

    def settings(self) -> tuple[dict, dict]:
        """The `generate` arguments of side A and side B: equal but for what is compared."""
        settings_a = self.a.settings()
        if self.compare_pipelines:
            return settings_a, dict(settings_a)
        return settings_a, {**settings_a, "negative_prompt": self.b.negative_prompt.value}

    def request(self) -> tuple[str, str]:
        """Ask both sides for the pair the controls describe (one seed for both); see `Studio.request`."""
        if not self.a.seed_lock.value:
            self.a._draw_seed()
        pair = self.settings()
        for settings in pair:
            StudioEngine.check(settings)  # both sides checked before either starts
        self.difference = None
        self.summary.value = "<i>generating the pair...</i>"
        return tuple(side.submit(settings) for side, settings in zip(self.sides, pair))

    def cancel(self) -> None:
        """Stop both sides (the running one within a step, the waiting one before it starts)."""
        for side in self.sides:
            side.cancel()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until neither side generates or waits; TimeoutError after `timeout` seconds per side."""
        for side in self.sides:
            side.wait_idle(timeout)

    @property
    def busy(self) -> bool:
        return any(side.busy for side in self.sides)

    def summary_markdown(self) -> str:
        """One sentence on the pair shown now, from the computed difference."""
        a, b = self.a.current, self.b.current
        if a is None or b is None or not self._same_settings(a, b):
            return "No finished A/B pair yet."
        r = a.recipe
        what = "pipelines" if self.compare_pipelines else "negative prompts"
        verdict = ("the two images are **byte-identical**" if a.image.tobytes() == b.image.tobytes()
                   else f"the mean absolute pixel difference is **{self.difference:.2f}** (0-255 scale)")
        return (f"Same prompt, seed {r['seed']}, guidance {r['guidance_scale']:g}, {r['num_inference_steps']} steps, "
                f"{r['width']}x{r['height']}; only the {what} differ: {verdict}.")

    # --- internals ----------------------------------------------------------------------------
    @staticmethod
    def _same_settings(a: GenerationResult, b: GenerationResult) -> bool:
        keys = ("prompt", "guidance_scale", "num_inference_steps", "seed", "height", "width")
        return all(a.recipe[k] == b.recipe[k] for k in keys)

    def _compare(self, _result) -> None:
        with self._compare_lock:  # both workers may finish at once; the last one sees both images
            a, b = self.a.current, self.b.current
            if a is None or b is None or not self._same_settings(a, b):
                self.difference = None
                self.summary.value = "<i>waiting for the other side...</i>"
                return
            self.difference = pixel_difference(a.image, b.image)
            self.summary.value = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(self.summary_markdown()))

    def _report(self, error: BaseException) -> None:
        self.last_error = error
        for side in self.sides:  # neither side ran: both panels say why
            side._report(error)

    def _guarded(self, handler):
        """Wrap a widget callback: an exception is shown in both panels and logged, never lost."""
        return guarded(handler, self._report)

    def _on_setting_change(self, change) -> None:
        if self.auto.value and not self.a._restoring:
            self.request()
