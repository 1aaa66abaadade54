"""`studio(pipe)`: an interactive generation panel made of core ipywidgets only.

Core widgets only, so it renders in JupyterLab, classic Notebook, VS Code and Colab without a
custom widget manager. Generation runs in a background thread (the kernel keeps receiving slider
and button events), one run at a time: a request made while one runs replaces the queued one
(latest wins), and a request for the image being made (a double click) is not queued again.
Loading another model cancels a running generation before its pipeline is emptied. Every finished image is cached under its full recipe, so moving a slider back to a
value already rendered shows that image at once; prompt embeddings are cached per (prompt,
negative prompt), so slider moves skip the three text encoders.

`ab_studio` puts two panels side by side behind one set of controls: the same seed and settings,
differing only in the negative prompt (one pipeline) or in the pipeline (e.g. bf16 vs NF4).
"""

from __future__ import annotations

import functools
import html
import io
import random
import re
import threading
import time
import traceback
from collections import OrderedDict
from pathlib import Path

import ipywidgets as widgets
import numpy as np
from PIL import Image

from ..errors import GatedModelError, GenerationCancelled, GPUOutOfMemoryError, QuantizationNeedsGPUError
from ..generation import pipeline_lock, validation
from ..generation.latent_preview import latent_preview
from ..generation.png_metadata import save_png_with_recipe
from ..generation.prompt_embeddings import PromptCache
from ..generation.text_to_image import GenerationResult, generate, resolve_arguments

DEFAULT_PROMPT = "a capybara wearing a suit holding a sign that reads hello world"
DISPLAY_WIDTH = 384  # pixels the image takes on screen, whatever its size; its height keeps the aspect ratio
THUMBNAIL_WIDTH = 112  # pixels per history entry
PLACEHOLDER_GREY = 238  # the blank image shown before the first one: reserves its space, no broken-image icon
SEED_RANGE = 2**32  # random seeds are drawn below this (JavaScript numbers stay exact)
# Errors the reader can act on: shown as their message alone (the traceback still goes to the log).
EXPECTED_ERRORS = (
    ValueError, TypeError, GPUOutOfMemoryError, GatedModelError, QuantizationNeedsGPUError,
)
# One generation at a time in this kernel, whichever panel asks: a diffusers pipeline keeps per-call
# state on itself (not thread-safe), and two runs at once would compete for the same memory.
_GENERATION_LOCK = threading.Lock()
RELEASED = ("This studio's pipeline was released (another model was loaded, or release_pipeline was called): "
            "make a new studio for the pipeline you use now, helpers.studio(pipe).")


def size_choices(default: int, multiple: int = 16, largest: int | None = None) -> list[tuple[str, tuple]]:
    """(label, (width, height)) options around the model's default size, all multiples of `multiple`."""

    def snap(x):
        return max(multiple, int(round(x / multiple)) * multiple)

    shapes = [
        (default, default),
        (snap(default * 0.75), snap(default * 0.75)),
        (snap(default * 0.5), snap(default * 0.5)),
        (snap(default * 1.25), snap(default * 0.75)),  # landscape
        (snap(default * 0.75), snap(default * 1.25)),  # portrait
    ]
    seen, options = set(), []
    for w, h in shapes:
        if (w, h) in seen or (largest and max(w, h) > largest):
            continue
        seen.add((w, h))
        options.append((f"{w}x{h}", (w, h)))
    return options


def _png_bytes(image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def _placeholder_png(width: int, height: int) -> bytes:
    """A plain light-grey PNG of the image's size: the image box keeps its place and shape."""
    return _png_bytes(Image.new("L", (width, height), PLACEHOLDER_GREY))


def _wide(slider):
    """A slider on a row of its own: guidance has 101 values in 0.1 steps, each needs pixels to drag to."""
    slider.layout.width = "98%"
    return slider


def _check_options(pipe, history_size, cache_size, preview) -> None:
    """Refuse a studio that could not work, before any widget exists."""
    components = getattr(pipe, "components", None)
    if not isinstance(components, dict) or "transformer" not in components:
        raise TypeError(f"studio needs an SD3 pipeline from helpers.load_pipeline(...), not {type(pipe).__name__} "
                        f"{pipe!r:.40}.")
    if components["transformer"] is None or pipeline_lock.is_released(pipe):
        raise ValueError(RELEASED.replace("make a new studio", "load it again and make the studio"))
    for name, value, smallest in (("history_size", history_size, 1), ("cache_size", cache_size, 0)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a whole number, not {type(value).__name__} {value!r}.")
        if value < smallest:
            raise ValueError(f"{name} must be at least {smallest}, not {value}.")
    if not isinstance(preview, bool):
        raise TypeError(f"preview must be True or False, not {type(preview).__name__} {preview!r}.")


def _guarded(handler, report):
    """`handler` for a widget callback, with any exception passed to `report` (shown in the panel
    and logged) instead of vanishing into the widget machinery."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as e:  # a widget callback has nowhere else to show its error
            report(e)
            return None

    return wrapper


class Studio:
    """The widget panel and the generation queue behind it. Display it (it is a cell's value), or
    drive it from code: set widget values, `generate_button.click()`, then `wait_idle()`."""

    def __init__(self, pipe, *, prompt: str = DEFAULT_PROMPT, negative_prompt: str = "",
                 save_dir="studio", history_size: int = 8, cache_size: int = 64, preview: bool = True):
        _check_options(pipe, history_size, cache_size, preview)
        self.pipe = pipe
        self.save_dir = Path(save_dir)
        self.history_size, self.cache_size, self.preview = history_size, cache_size, preview
        self.prompts = PromptCache(pipe)
        self.cache: OrderedDict[tuple, GenerationResult] = OrderedDict()
        self.history: list[GenerationResult] = []
        self.current: GenerationResult | None = None
        self.last_error: BaseException | None = None
        self.cache_hits = self.generations = 0
        self._lock = threading.Lock()
        self._pending: dict | None = None  # the one request waiting for the worker
        self._running_key: tuple | None = None  # the recipe the worker is making now
        self._steps_done = 0  # denoising steps finished in the running generation
        self._worker: threading.Thread | None = None
        self._cancel = threading.Event()
        self._restoring = False  # True while restore() sets widgets: no auto-generate then
        self.on_show = None  # called with every result the panel shows (ABStudio compares its two sides)

        info = getattr(pipe, "load_info", None)
        config = pipe.transformer.config
        multiple = pipe.vae_scale_factor * config.patch_size
        largest = (config.pos_embed_max_size * multiple) if getattr(config, "pos_embed_max_size", None) else None
        default = info.default_size if info else config.sample_size * pipe.vae_scale_factor
        guidance = info.recommended.guidance_scale if info else 3.5
        steps = info.recommended.num_inference_steps if info else 28

        style = {"description_width": "110px"}
        wide = widgets.Layout(width="98%")
        self.prompt = widgets.Textarea(prompt, description="Prompt", rows=2, layout=wide, style=style)
        self.negative_prompt = widgets.Textarea(
            negative_prompt, description="Negative prompt", rows=1, layout=wide, style=style,
            placeholder="what to steer away from (used when guidance > 1)",
        )
        self.guidance = widgets.FloatSlider(
            value=guidance, min=0.0, max=max(10.0, guidance), step=0.1, description="Guidance",
            continuous_update=False, readout_format=".1f", style=style,
        )
        self.steps = widgets.IntSlider(
            value=steps, min=1, max=max(60, steps), description="Steps", continuous_update=False, style=style,
        )
        self.seed = widgets.IntText(value=0, description="Seed", style=style, layout=widgets.Layout(width="260px"))
        self.random_seed_button = widgets.Button(description="random", icon="random", tooltip="draw a new seed")
        self.seed_lock = widgets.ToggleButton(
            value=True, description="lock", icon="lock",
            tooltip="locked: keep this seed; unlocked: a new random seed for every image",
        )
        options = size_choices(default, multiple, largest)
        self.size = widgets.Dropdown(options=options, value=options[0][1], description="Size", style=style)
        self.generate_button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.cancel_button = widgets.Button(description="Cancel", button_style="warning", icon="stop")
        self.auto = widgets.Checkbox(value=False, description="auto-generate when a slider is released", indent=False)
        self.save_button = widgets.Button(description="Save PNG", icon="save", tooltip=f"writes into {self.save_dir}/")
        self.progress = widgets.IntProgress(value=0, min=0, max=steps, description="", layout=widgets.Layout(width="240px"))
        self.progress_label = widgets.Label("ready")
        self.progress_label.add_class("sd35-studio-progress")
        # Fixed width, height from the image's own aspect ratio; flex-start: never stretched to the row's height.
        self.image = widgets.Image(
            value=_placeholder_png(*self.size.value), format="png",
            layout=widgets.Layout(width=f"{DISPLAY_WIDTH}px", height="auto", align_self="flex-start", flex="0 0 auto"),
        )
        self.image.add_class("sd35-studio-image")
        self.recipe_view = widgets.HTML("<i>no image yet</i>")
        self.recipe_view.add_class("sd35-studio-recipe")
        self.message = widgets.HTML("")
        self.message.add_class("sd35-studio-message")
        self.history_strip = widgets.HBox([], layout=widgets.Layout(overflow_x="auto"))
        self.history_strip.add_class("sd35-studio-history")
        self.log = widgets.Output(layout=widgets.Layout(max_height="200px", overflow_y="auto"))
        self.log_box = widgets.Accordion(children=[self.log], titles=("Log (tracebacks)",), selected_index=None)

        self.generate_button.on_click(self._guarded(lambda _: self.request()))
        self.cancel_button.on_click(self._guarded(lambda _: self.cancel()))
        self.random_seed_button.on_click(self._guarded(lambda _: self._draw_seed()))
        self.save_button.on_click(self._guarded(lambda _: self.save()))
        for control in (self.guidance, self.steps, self.seed, self.size):
            control.observe(self._guarded(self._on_setting_change), names="value")
        self.size.observe(self._guarded(self._on_size_change), names="value")

        controls = widgets.VBox([
            self.prompt, self.negative_prompt,
            _wide(self.guidance), _wide(self.steps),
            widgets.HBox([self.seed, self.random_seed_button, self.seed_lock, self.size]),
            widgets.HBox([self.generate_button, self.cancel_button, self.save_button, self.auto]),
            widgets.HBox([self.progress, self.progress_label]),
        ])
        self.widget = widgets.VBox([
            controls,
            widgets.HBox([self.image, widgets.VBox([self.recipe_view, self.message], layout=widgets.Layout(padding="0 0 0 12px"))]),
            widgets.HTML("<b>History</b> (click ↺ restore to put an image's settings back)"),
            self.history_strip,
            self.log_box,
        ])
        self.widget.add_class("sd35-studio")

    # --- display -------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # --- reading the controls ------------------------------------------------------------------
    def settings(self) -> dict:
        """The `generate` arguments the controls show now."""
        width, height = self.size.value
        return {
            "prompt": self.prompt.value,
            "negative_prompt": self.negative_prompt.value,
            "guidance_scale": round(float(self.guidance.value), 4),
            "num_inference_steps": int(self.steps.value),
            "seed": int(self.seed.value),
            "height": int(height),
            "width": int(width),
        }

    @staticmethod
    def cache_key(settings: dict) -> tuple:
        """The full recipe an image depends on (the pipeline is fixed per studio)."""
        return tuple(settings[k] for k in (
            "prompt", "negative_prompt", "guidance_scale", "num_inference_steps", "seed", "height", "width"))

    # --- actions ------------------------------------------------------------------------------
    def request(self) -> str:
        """Ask for the image the controls describe: "cached" (shown at once), "started", "queued", or
        "running" (that very image is being made now: nothing more is queued)."""
        if not self.seed_lock.value:
            self._draw_seed()
        settings = self.settings()
        self.check(settings)  # one clear message before any work
        return self.submit(settings)

    @staticmethod
    def check(settings: dict) -> None:
        """Raise the error a generation with these settings would hit first (the prompts' checks)."""
        validation.check_prompt(settings["prompt"])
        validation.check_prompt(settings["negative_prompt"], "negative_prompt")

    def submit(self, settings: dict) -> str:
        """Show `settings`' image from the cache, or queue it for the worker (see `request`).

        "running" when that very image is being made now (a double click): nothing is queued."""
        if self._pipeline_released():
            self.progress_label.value = "not started: the pipeline was released"
            raise ValueError(RELEASED)
        key = self.cache_key(settings)
        with self._lock:
            cached = self.cache.get(key)
            if cached is not None:
                self.cache.move_to_end(key)
                self.cache_hits += 1
        if cached is not None:
            self._show_result(cached, "cached: shown at once, nothing recomputed")
            return "cached"
        with self._lock:
            if key == self._running_key and not self._cancel.is_set():
                self._pending = None  # the running image is the latest request: anything queued is stale
                return "running"
            self._pending = settings  # replaces any request still waiting: latest wins
            if self._worker is None:
                self._cancel.clear()
                self._worker = threading.Thread(target=self._work, name="sd35-studio", daemon=True)
                self._worker.start()
                return "started"
        self.progress_label.value = "queued: runs when the current image is done (latest request wins)"
        return "queued"

    def cancel(self) -> None:
        """Stop the running generation within one denoising step and drop the queued request."""
        with self._lock:
            self._pending = None
            running = self._worker is not None
        if running:
            self._cancel.set()
            self.progress_label.value = "cancelling..."

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until no generation runs or waits (for tests and scripts); TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                worker = self._worker
                if worker is not None and not worker.is_alive():  # died without saying so: idle now
                    self._worker = self._running_key = None
                    worker = None
            if worker is None:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the studio was still generating after {timeout} s")
            worker.join(remaining)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._worker is not None

    def restore(self, result: GenerationResult) -> None:
        """Put a past image's settings back into the controls and show it."""
        r = result.recipe
        self._restoring = True
        try:
            self.prompt.value = r["prompt"]
            self.negative_prompt.value = r["negative_prompt"] or ""
            self.guidance.value = r["guidance_scale"]
            self.steps.value = r["num_inference_steps"]
            self.seed.value = r["seed"]
            if (r["width"], r["height"]) not in [v for _, v in self.size.options]:
                self.size.options = [*self.size.options, (f"{r['width']}x{r['height']}", (r["width"], r["height"]))]
            self.size.value = (r["width"], r["height"])
        finally:
            self._restoring = False
        self._show_result(result, "restored from history")

    def save(self) -> Path | None:
        """Write the shown image as a PNG with its recipe embedded; never overwrites a file."""
        if self.current is None:
            self._say("Nothing to save yet: generate an image first.", "warning")
            return None
        path = save_png_with_recipe(self.current.image, self.current.recipe, self.save_dir)
        self._say(f"Saved <code>{html.escape(str(path))}</code> (recipe in its PNG text chunks).", "ok")
        return path

    # --- the background worker ----------------------------------------------------------------
    def _work(self) -> None:
        try:
            while True:
                with self._lock:
                    settings, self._pending = self._pending, None
                    if settings is None:
                        self._worker = self._running_key = None
                        return
                    self._cancel.clear()
                    self._running_key = self.cache_key(settings)
                self._run(settings)
        finally:  # however this thread ends, the studio is idle afterwards (never "busy" forever)
            with self._lock:
                if self._worker is threading.current_thread():
                    self._worker = self._running_key = self._pending = None

    def _run(self, settings: dict) -> None:
        try:
            self.progress.max = settings["num_inference_steps"]
            self.progress.value = self._steps_done = 0
            # Registered before waiting for the lock: releasing the pipeline cancels this run too.
            with pipeline_lock.running_on(self.pipe, self.cancel):
                if _GENERATION_LOCK.locked():
                    self.progress_label.value = "waiting: another image is being generated"
                with _GENERATION_LOCK:
                    result = self._generate(settings)
            key = self.cache_key(settings)
            with self._lock:
                self.generations += 1
                self.cache[key] = result
                while len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
            self._add_history(result)
            self._show_result(result, f"generated in {result.seconds:.2f} s")
        except BaseException as e:  # even KeyboardInterrupt: shown in the widget and logged; the studio stays usable
            self._show_current()  # never a half-finished preview beside another image's recipe
            if self._pipeline_released():
                self.progress_label.value = "stopped: the pipeline was released"
                self._report(ValueError(RELEASED))
            elif isinstance(e, GenerationCancelled):
                self.progress_label.value = "cancelled"
                total = settings["num_inference_steps"]
                where = f"at step {self._steps_done} of {total}" if self._steps_done else "before it started"
                shown = "; the last finished image is shown" if self.current is not None else ""
                self._say(f"Cancelled {where}{shown}.", "warning")
            else:
                self.progress_label.value = "failed"
                self._report(e)

    def _generate(self, settings: dict) -> GenerationResult:
        if self._cancel.is_set():  # cancelled while waiting for the lock
            raise GenerationCancelled("Cancelled before it started.")
        if self._pipeline_released():
            raise ValueError(RELEASED)
        arguments = {k: v for k, v in settings.items() if k not in ("prompt", "negative_prompt")}
        resolve_arguments(self.pipe, **arguments)  # bad settings or a released pipeline: say so before encoding
        self.progress_label.value = "encoding the prompt..."
        embeddings = self.prompts.get(settings["prompt"], settings["negative_prompt"])
        started = time.perf_counter()
        return generate(self.pipe, embeddings=embeddings, callback=self._step_callback(started), **arguments)

    def _step_callback(self, started: float):
        width = height = None

        def on_step(step: int, total: int, latents) -> bool:
            nonlocal width, height
            if self._cancel.is_set():
                return True
            done = self._steps_done = step + 1
            elapsed = time.perf_counter() - started
            eta = elapsed / done * (total - done)
            self.progress.value = done
            self.progress_label.value = f"step {done}/{total} · {elapsed:.1f} s elapsed · ETA {eta:.1f} s"
            if self.preview:
                # One pixel per latent (8x smaller than the image); the browser scales it up.
                self.image.format = "jpeg"
                self.image.value = _png_bytes(latent_preview(latents), "JPEG")
            return False

        return on_step

    # --- showing things -----------------------------------------------------------------------
    def _show_result(self, result: GenerationResult, note: str) -> None:
        self.current = result
        self.image.format = "png"
        self.image.value = _png_bytes(result.image)
        r = result.recipe
        rows = [
            ("model", r["model"]), ("weights", ", ".join(filter(None, [r["dtype"], r["quantization"]]))),
            ("negative", r["negative_prompt"] or "(none)"),
            ("seed", r["seed"]), ("guidance", r["guidance_scale"]),
            ("steps", r["num_inference_steps"]), ("size", f"{r['width']}x{r['height']}"),
            ("time", f"{result.seconds:.2f} s"),
        ]
        table = "".join(f"<tr><td><b>{k}</b></td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        self.recipe_view.value = f"<table>{table}</table><i>{html.escape(note)}</i>"
        self.progress.value = self.progress.max if "generated" in note else self.progress.value
        self.progress_label.value = note
        self.message.value = ""
        if self.on_show is not None:
            self.on_show(result)

    def _show_current(self) -> None:
        """Show the last finished image again (or the blank placeholder): what Save would write."""
        if self.current is not None:
            self._show_result(self.current, "the last finished image")
        else:
            self.image.format = "png"
            self.image.value = _placeholder_png(*self.size.value)
            self.recipe_view.value = "<i>no image yet</i>"

    def _add_history(self, result: GenerationResult) -> None:
        self.history = [result, *self.history][: self.history_size]
        items = []
        for past in self.history:
            thumb = past.image.copy()
            thumb.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH))
            r = past.recipe
            width = f"{THUMBNAIL_WIDTH}px"
            # Wrapped, never cut: a random seed has up to 19 digits.
            caption = widgets.HTML(
                f'<div style="white-space:normal;overflow-wrap:anywhere;line-height:1.3;font-size:12px">'
                f"guidance {r['guidance_scale']:g}<br>{r['num_inference_steps']}&nbsp;steps · {r['width']}x{r['height']}"
                f"<br>seed {r['seed']}</div>",
                layout=widgets.Layout(width=width),
            )
            button = widgets.Button(
                description="↺ restore",
                tooltip=f"restore guidance {r['guidance_scale']:g}, {r['num_inference_steps']} steps, seed {r['seed']}",
                layout=widgets.Layout(width=width),
            )
            button.on_click(self._guarded(functools.partial(lambda past, _: self.restore(past), past)))
            # A square box for every shape, the thumbnail fitted inside: the captions line up.
            image = widgets.Image(value=_png_bytes(thumb), layout=widgets.Layout(width=width, height=width, object_fit="contain"))
            items.append(widgets.VBox([image, caption, button], layout=widgets.Layout(margin="0 8px 0 0")))
        self.history_strip.children = items

    def _say(self, text_html: str, kind: str = "error") -> None:
        colours = {"error": "#b00020", "warning": "#8a6d00", "ok": "#1b5e20"}
        self.message.value = f'<div style="color:{colours[kind]}">{text_html}</div>'

    def _report(self, error: BaseException) -> None:
        """Show an error in the widget and append its traceback to the log."""
        self.last_error = error
        kind = type(error).__name__
        hint = "" if isinstance(error, EXPECTED_ERRORS) else " (details in the Log below)"
        self._say(f"<b>{kind}</b>: {html.escape(str(error))}{hint}")
        self.log.append_stdout("".join(traceback.format_exception(error)))

    def _guarded(self, handler):
        """Wrap a widget callback: an exception is shown in the widget and logged, never lost."""
        return _guarded(handler, self._report)

    def _draw_seed(self) -> None:
        self._restoring = True  # a new seed alone does not auto-generate twice
        try:
            self.seed.value = random.SystemRandom().randrange(SEED_RANGE)
        finally:
            self._restoring = False

    def _on_setting_change(self, change) -> None:
        if self.auto.value and not self._restoring:
            self.request()

    def _on_size_change(self, change) -> None:
        if self.current is None and not self.busy:  # the blank box takes the new shape
            self.image.format = "png"
            self.image.value = _placeholder_png(*change["new"])

    def _pipeline_released(self) -> bool:
        return getattr(self.pipe, "transformer", None) is None or pipeline_lock.is_released(self.pipe)


def studio(pipe, **options) -> Studio:
    """Show an interactive generation panel for `pipe` (make it a cell's last line).

    Options: prompt, negative_prompt, save_dir ("studio", relative to the notebook's folder),
    history_size, cache_size, preview (live latent preview every step)."""
    return Studio(pipe, **options)


def pixel_difference(image_a, image_b) -> float:
    """Mean absolute difference of two same-size images, per RGB value on the 0-255 scale (0: identical)."""
    a = np.asarray(image_a.convert("RGB"), dtype=np.int16)
    b = np.asarray(image_b.convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare a {a.shape[1]}x{a.shape[0]} image with a {b.shape[1]}x{b.shape[0]} one.")
    return float(np.abs(a - b).mean())


class ABStudio:
    """Two studios side by side behind one set of controls: both sides get the same prompt, seed and
    settings and differ only in the negative prompt (one pipeline: boxes "Negative A" and "Negative B")
    or in the pipeline (`pipe_b` given: one negative prompt for both). Side A's controls are the
    shared ones; `a` and `b` are ordinary `Studio`s, so queueing, cancel, caches and errors work as there.
    Drive it from code like a Studio: set widget values, `generate_button.click()`, `wait_idle()`."""

    def __init__(self, pipe_a, pipe_b=None, *, prompt: str = DEFAULT_PROMPT, negative_prompt_a: str = "",
                 negative_prompt_b: str = "", **options):
        self.compare_pipelines = pipe_b is not None
        if self.compare_pipelines and negative_prompt_b:
            raise ValueError("Compare two pipelines or two negative prompts, not both: with pipe_b, "
                             "leave negative_prompt_b out (negative_prompt_a is used on both sides).")
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
            _wide(a.guidance), _wide(a.steps),
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
            widgets.Accordion(children=[a.log, b.log], titles=("Log A (tracebacks)", "Log B (tracebacks)"),
                              selected_index=None),
        ])
        self.widget.add_class("sd35-ab-studio")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

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
            Studio.check(settings)  # both sides checked before either starts
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
        return _guarded(handler, self._report)

    def _on_setting_change(self, change) -> None:
        if self.auto.value and not self.a._restoring:
            self.request()


def ab_studio(pipe_a, pipe_b=None, **options) -> ABStudio:
    """Show two studio panels side by side at the same seed and settings (make it a cell's last line).

    One pipeline: the sides differ in their negative prompts (`negative_prompt_a`, `negative_prompt_b`).
    Two pipelines (load the second with `keep_previous=True`): the sides differ in the pipeline.
    Other options as for `studio`: prompt, save_dir, history_size, cache_size, preview."""
    return ABStudio(pipe_a, pipe_b, **options)
