"""`Studio(pipe)`: an interactive generation panel made of core ipywidgets only.

Core widgets only, so it renders in JupyterLab, classic Notebook, VS Code and Colab without a
custom widget manager. The view is a thin layer: widget events become calls on its
`engine.StudioEngine` (queue, worker thread, cancel, caches, history), and the engine's events
become widget updates (progress, live preview, the image and its recipe, errors in the panel).
Each image holds the pipeline's lock: a `generate` in another cell waits for the studio's image
(and says so), and the studio waits for it, its label saying for what.
"""

from __future__ import annotations

import functools
import html
import io
import random
import traceback

import ipywidgets as widgets
from PIL import Image

from ..errors import GatedModelError, GenerationCancelled, GPUOutOfMemoryError, QuantizationNeedsGPUError
from ..generation.latent_preview import check_tiny_autoencoder, latent_preview, tiny_autoencoder_preview
from ..generation.text_to_image import GenerationResult
from ..generation.validation import MAX_SEED
from ..output_folders import check_folder
from .draft import draft_settings
from .engine import RELEASED, Listener, StudioEngine, check_result, check_texts, size_choices
from .widget_versions import ShowsWidget, titled_accordion

DEFAULT_PROMPT = "a capybara wearing a suit holding a sign that reads hello world"
DISPLAY_WIDTH = 384  # pixels the image takes on screen, whatever its size; its height keeps the aspect ratio
THUMBNAIL_WIDTH = 112  # pixels per history entry
PLACEHOLDER_GREY = 238  # the blank image shown before the first one: reserves its space, no broken-image icon
SEED_RANGE = MAX_SEED + 1  # random seeds are drawn below this: every seed generate() accepts
# Errors the reader can act on: shown as their message alone (the traceback still goes to the log).
EXPECTED_ERRORS = (
    ValueError, TypeError, GPUOutOfMemoryError, GatedModelError, QuantizationNeedsGPUError,
)


def _png_bytes(image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def _placeholder_png(width: int, height: int) -> bytes:
    """A plain light-grey PNG of the image's size: the image box keeps its place and shape."""
    return _png_bytes(Image.new("L", (width, height), PLACEHOLDER_GREY))


def full_width(slider):
    """A slider on a row of its own: guidance has 101 values in 0.1 steps, each needs pixels to drag to."""
    slider.layout.width = "98%"
    return slider


def guarded(handler, report):
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


def _history_item(past: GenerationResult, restore) -> widgets.VBox:
    """A history entry: the thumbnail, its settings and a button that calls `restore(past)`."""
    thumb = past.image.copy()
    thumb.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH))
    r = past.recipe
    width = f"{THUMBNAIL_WIDTH}px"
    # Wrapped, never cut: a seed has up to 10 digits.
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
    button.on_click(lambda _: restore(past))
    # A square box for every shape, the thumbnail fitted inside: the captions line up.
    image = widgets.Image(value=_png_bytes(thumb), layout=widgets.Layout(width=width, height=width, object_fit="contain"))
    return widgets.VBox([image, caption, button], layout=widgets.Layout(margin="0 8px 0 0"))


class StudioWidgets(ShowsWidget):
    """The studio's widgets and their layout, with defaults from the pipeline's preset; no behaviour
    (`Studio` wires them to its engine). `widget` is the whole panel."""

    def __init__(self, pipe, prompt: str, negative_prompt: str, save_dir) -> None:
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
        self.save_button = widgets.Button(description="Save PNG", icon="save", tooltip=f"writes into {save_dir}/")
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
        self.history_strip = widgets.HBox([], layout=widgets.Layout(overflow="auto"))
        self.history_strip.add_class("sd35-studio-history")
        self.log = widgets.Output(layout=widgets.Layout(max_height="200px", overflow="auto"))
        self.log_box = titled_accordion([self.log], ["Log (tracebacks)"])

        controls = widgets.VBox([
            self.prompt, self.negative_prompt,
            full_width(self.guidance), full_width(self.steps),
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

    # --- messages: shown in the widget, tracebacks in its log ---------------------------------
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
        return guarded(handler, self._report)


class Studio(StudioWidgets, Listener):
    """Show an interactive generation panel for `pipe` (make it a cell's last line), or drive it
    from code: set widget values, `generate_button.click()`, then `wait_idle()`.

    Options: prompt, negative_prompt, save_dir ("studio", relative to the notebook's folder),
    history_size, cache_size, preview (live preview of the predicted clean image every step),
    preview_decoder (opt-in: TAESD3, `AutoencoderTiny.from_pretrained("madebyollin/taesd3")`, for a
    full-size preview instead of the 16x3 map's 1/8-size one), draft (slider moves render
    `draft.draft_settings`: fewer steps, a smaller image; the Generate button renders the full recipe)."""

    def __init__(self, pipe, prompt: str = DEFAULT_PROMPT, *, negative_prompt: str = "",
                 save_dir="studio", history_size: int = 8, cache_size: int = 64, preview: bool = True,
                 preview_decoder=None, draft: bool = False):
        for name, value in (("preview", preview), ("draft", draft)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, not {type(value).__name__} {value!r}.")
        if preview_decoder is not None:
            check_tiny_autoencoder(preview_decoder)
        self.preview_decoder = preview_decoder
        self.draft = draft
        negative_prompt = check_texts(prompt, negative_prompt)
        self.engine = StudioEngine(pipe, self, save_dir=save_dir, history_size=history_size, cache_size=cache_size)
        self.pipe, self.preview = pipe, preview
        self.current: GenerationResult | None = None  # the image shown (what Save writes)
        self.last_error: BaseException | None = None
        self._restoring = False  # True while restore() sets widgets: no auto-generate then
        self.on_show = None  # called with every result the panel shows (ABStudio compares its two sides)
        super().__init__(pipe, prompt, negative_prompt, self.engine.save_dir)
        self.generate_button.on_click(self._guarded(lambda _: self.request()))
        self.cancel_button.on_click(self._guarded(lambda _: self.cancel()))
        self.random_seed_button.on_click(self._guarded(lambda _: self._draw_seed()))
        self.save_button.on_click(self._guarded(lambda _: self.save()))
        for control in (self.guidance, self.steps, self.seed, self.size):
            control.observe(self._guarded(self._on_setting_change), names="value")
        self.size.observe(self._guarded(self._on_size_change), names="value")

    # --- what the engine holds ----------------------------------------------------------------
    prompts = property(lambda self: self.engine.prompts, doc="The prompt-embedding cache (hits, misses).")
    history = property(lambda self: self.engine.history, doc="Finished images, newest first.")
    generations = property(lambda self: self.engine.generations, doc="Images generated (not from the cache).")
    cache_hits = property(lambda self: self.engine.cache_hits, doc="Requests answered from the image cache.")
    busy = property(lambda self: self.engine.busy, doc="True while an image runs or waits.")
    check = staticmethod(StudioEngine.check)

    # --- actions ------------------------------------------------------------------------------
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

    def request(self, draft: bool = False) -> str:
        """Ask for the image the controls describe: "cached" (shown at once), "started", "queued", or
        "running" (that very image is being made now: nothing more is queued). `draft`: its draft."""
        if not self.seed_lock.value:
            self._draw_seed()
        settings = draft_settings(self.settings(), self.pipe) if draft else self.settings()
        self.check(settings)  # one clear message before any work
        return self.submit(settings)

    def submit(self, settings: dict) -> str:
        """Queue `settings` with the engine, or show them from its cache (see `request`)."""
        return self.engine.submit(settings)

    def cancel(self) -> None:
        """Stop the running generation within one denoising step and drop the queued request."""
        self.engine.cancel()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until no generation runs or waits (for tests and scripts); TimeoutError after `timeout` seconds."""
        self.engine.wait_idle(timeout)

    def restore(self, result: GenerationResult) -> None:
        """Put a past image's settings back into the controls and show it."""
        check_result(result)
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
        self.on_result(result, "restored from history", new=False)

    @property
    def save_dir(self):  # the folder Save writes into; a new one assigned takes effect at the next Save
        return self.engine.save_dir

    @save_dir.setter
    def save_dir(self, folder) -> None:
        self.engine.save_dir = check_folder(folder, "save_dir")
        self.save_button.tooltip = f"writes into {self.engine.save_dir}/"

    def save(self):
        """Write the shown image as a PNG with its recipe embedded; never overwrites a file."""
        if self.current is None:
            self._say("Nothing to save yet: generate an image first.", "warning")
            return None
        path = self.engine.save(self.current)
        self._say(f"Saved <code>{html.escape(str(path))}</code> (recipe in its PNG text chunks).", "ok")
        return path

    # --- the engine's events (from its worker thread) -----------------------------------------
    def on_status(self, text: str) -> None:
        self.progress_label.value = text

    def on_start(self, settings: dict) -> None:
        self.progress.max = settings["num_inference_steps"]
        self.progress.value = 0

    def on_step(self, done: int, total: int, elapsed: float, latents) -> None:
        self.progress.value = done
        self.progress_label.value = f"step {done}/{total} · {elapsed:.1f} s elapsed · ETA {elapsed / done * (total - done):.1f} s"
        if self.preview:
            # x0_hat: one pixel per latent (8x smaller than the image, the browser scales it up), or
            # full size through TAESD3 when the studio has a preview_decoder.
            decoder = self.preview_decoder
            frame = latent_preview(latents) if decoder is None else tiny_autoencoder_preview(decoder, latents)
            self.image.format = "jpeg"
            self.image.value = _png_bytes(frame, "JPEG")

    def on_result(self, result: GenerationResult, note: str, new: bool) -> None:
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
        if new:
            self.progress.value = self.progress.max
            self.history_strip.children = [_history_item(past, self._guarded(self.restore)) for past in self.engine.history]
        self.progress_label.value = note
        self.message.value = ""
        if self.on_show is not None:
            self.on_show(result)

    def on_failure(self, error: BaseException, settings: dict, steps_done: int) -> None:
        self._show_current()  # never a half-finished preview beside another image's recipe
        if isinstance(error, ValueError) and str(error) == RELEASED:
            self.progress_label.value = "stopped: the pipeline was released"
            self._report(error)
        elif isinstance(error, GenerationCancelled):
            self.progress_label.value = "cancelled"
            total = settings["num_inference_steps"]
            where = f"at step {steps_done} of {total}" if steps_done else "before it started"
            shown = "; the last finished image is shown" if self.current is not None else ""
            self._say(f"Cancelled {where}{shown}.", "warning")
        else:
            self.progress_label.value = "failed"
            self._report(error)

    # --- showing things -----------------------------------------------------------------------
    def _show_current(self) -> None:
        """Show the last finished image again (or the blank placeholder): what Save would write."""
        if self.current is not None:
            self.on_result(self.current, "the last finished image", new=False)
        else:
            self.image.format = "png"
            self.image.value = _placeholder_png(*self.size.value)
            self.recipe_view.value = "<i>no image yet</i>"

    def _draw_seed(self) -> None:
        self._restoring = True  # a new seed alone does not auto-generate twice
        try:
            self.seed.value = random.SystemRandom().randrange(SEED_RANGE)
        finally:
            self._restoring = False

    def _on_setting_change(self, change) -> None:
        if self.auto.value and not self._restoring:
            self.request(draft=self.draft)

    def _on_size_change(self, change) -> None:
        if self.current is None and not self.busy:  # the blank box takes the new shape
            self.image.format = "png"
            self.image.value = _placeholder_png(*change["new"])
