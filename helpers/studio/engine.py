"""The studio's engine: the request queue, the worker thread, cancel, the image cache and history.

No widgets here: a view (`view.Studio`) turns widget events into engine calls and gets the
engine's events back through a `Listener`. Generation runs in a background thread (the kernel
keeps receiving slider and button events), one run at a time: a request made while one runs
replaces the queued one (latest wins), and a request for the image being made (a double click)
is not queued again. Each image holds the pipeline's lock (`pipeline_lock.using`), so a
`generate` from a cell waits for the studio's image and the studio waits for it, never both at
once; releasing the pipeline cancels a running image. Every finished image is cached under its
full recipe, and prompt embeddings per (prompt, negative prompt), so slider moves skip the text encoders.
"""

from __future__ import annotations

import numbers
import threading
import time
from collections import OrderedDict
from pathlib import Path

from ..generation import pipeline_lock, validation
from ..generation.latent_preview import PredictedCleanLatents
from ..generation.png_metadata import check_recipe, save_png_with_recipe
from ..generation.prompt_embeddings import PromptCache
from ..generation.text_to_image import (
    RECIPE_KEYS,
    GenerationResult,
    check_arguments,
    generate,
    resolve_arguments,
)
from ..output_folders import check_folder

RELEASED = ("This studio's pipeline was released (another model was loaded, or release_pipeline was called): "
            "make a new studio for the pipeline you use now, helpers.Studio(pipe).")


class Listener:
    """What an engine tells its view. Every method may be called from the worker thread."""

    def on_status(self, text: str) -> None:
        """A one-line state: "queued...", "encoding the prompt...", "waiting for ..."."""

    def on_start(self, settings: dict) -> None:
        """The worker took `settings` and starts on them."""

    def on_step(self, done: int, total: int, elapsed: float, latents) -> None:
        """`done` of `total` denoising steps finished after `elapsed` seconds; `latents`: the predicted
        clean latents x0_hat = x_t - sigma * v (what the image will be, as the model sees it now)."""

    def on_result(self, result: GenerationResult, note: str, new: bool) -> None:
        """Show `result`; `new`: just generated (and added to the history), else from the cache."""

    def on_failure(self, error: BaseException, settings: dict, steps_done: int) -> None:
        """A run ended without an image: GenerationCancelled, ValueError(RELEASED) or another error."""


def check_pipeline(pipe) -> None:
    """Refuse a pipeline a studio could not use, before any widget exists."""
    components = getattr(pipe, "components", None)
    if not isinstance(components, dict) or "transformer" not in components:
        raise TypeError(f"studio needs an SD3 pipeline from helpers.load_pipeline(...), not {type(pipe).__name__} "
                        f"{pipe!r:.40}.")
    if components["transformer"] is None or pipeline_lock.is_released(pipe):
        raise ValueError(RELEASED.replace("make a new studio", "load it again and make the studio"))


def check_settings(pipe, settings) -> None:
    """`settings` must hold exactly `generate`'s recipe arguments, each one `generate` accepts
    (its own checks, text_to_image.check_arguments): one clear error before the cache or the queue."""
    if not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict of generate() arguments ({', '.join(RECIPE_KEYS)}), "
                        f"not {type(settings).__name__} {settings!r:.60}.")
    missing = [k for k in RECIPE_KEYS if k not in settings]
    unknown = sorted(set(settings) - set(RECIPE_KEYS))
    if missing or unknown:
        raise ValueError(f"settings must hold exactly {', '.join(RECIPE_KEYS)}; "
                         + (f"missing: {', '.join(missing)}" if missing else f"unknown: {', '.join(unknown)}") + ".")
    check_arguments(pipe, **settings)


def check_texts(prompt, negative_prompt) -> str:
    """The studio's starting texts must be strings (an empty prompt box is fine); None: no negative."""
    for name, value in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if not isinstance(value, str) and not (name == "negative_prompt" and value is None):
            raise TypeError(f"{name} must be a string (the text the box starts with), not {type(value).__name__} {value!r:.60}.")
    return negative_prompt or ""


def check_result(result) -> None:
    """What `restore` puts back must be a GenerationResult with a whole recipe (from the history)."""
    if not isinstance(result, GenerationResult):
        raise TypeError(f"restore needs a GenerationResult (an entry of studio.history), not {type(result).__name__} {result!r:.60}.")
    check_recipe(result.recipe, "the result's recipe")


def check_sizes(history_size, cache_size) -> None:
    for name, value, smallest in (("history_size", history_size, 1), ("cache_size", cache_size, 0)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a whole number, not {type(value).__name__} {value!r}.")
        if value < smallest:
            raise ValueError(f"{name} must be at least {smallest}, not {value}.")


class StudioEngine:
    """Requests in, images out: `submit(settings)` answers from the cache or queues the request for
    the worker thread; `cancel()`, `wait_idle()`, `save(result)`. Events go to `listener`."""

    def __init__(self, pipe, listener: Listener | None = None, *, save_dir="studio", history_size: int = 8,
                 cache_size: int = 64, who: str = "the studio"):
        check_pipeline(pipe)
        check_sizes(history_size, cache_size)
        self.pipe, self.listener, self.who = pipe, listener or Listener(), who
        self.save_dir = check_folder(save_dir, "save_dir")
        self.history_size, self.cache_size = history_size, cache_size
        self.prompts = PromptCache(pipe)
        self.cache: OrderedDict[tuple, GenerationResult] = OrderedDict()
        self.history: list[GenerationResult] = []  # newest first, at most history_size
        self.cache_hits = self.generations = 0
        self._lock = threading.Lock()  # guards the queue and the counters below
        self._pending: dict | None = None  # the one request waiting for the worker
        self._running_key: tuple | None = None  # the recipe the worker is making now
        self._steps_done = 0  # denoising steps finished in the running generation
        self._worker: threading.Thread | None = None
        self._cancel = threading.Event()

    @staticmethod
    def cache_key(settings: dict) -> tuple:
        """The full recipe an image depends on (the pipeline is fixed per engine)."""
        return tuple(settings[k] for k in RECIPE_KEYS)

    @staticmethod
    def check(settings: dict) -> None:
        """Raise the error a generation with these settings would hit first (the prompts' checks)."""
        validation.check_prompt(settings["prompt"])
        validation.check_prompt(settings["negative_prompt"], "negative_prompt")

    @property
    def released(self) -> bool:
        return getattr(self.pipe, "transformer", None) is None or pipeline_lock.is_released(self.pipe)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._worker is not None

    def submit(self, settings: dict) -> str:
        """Show `settings`' image from the cache ("cached"), start the worker on it ("started"),
        queue it ("queued", replacing any queued request) or, when that very image is being made
        now (a double click), queue nothing ("running")."""
        if self.released:
            self.listener.on_status("not started: the pipeline was released")
            raise ValueError(RELEASED)
        check_settings(self.pipe, settings)  # before the cache: seed=True must not find seed 1's image
        key = self.cache_key(settings)
        with self._lock:
            cached = self.cache.get(key)
            if cached is not None:
                self.cache.move_to_end(key)
                self.cache_hits += 1
        if cached is not None:
            self.listener.on_result(cached, "cached: shown at once, nothing recomputed", new=False)
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
        self.listener.on_status("queued: runs when the current image is done (latest request wins)")
        return "queued"

    def cancel(self) -> bool:
        """Stop the running generation within one denoising step (or while it waits for the
        pipeline) and drop the queued request. True if something was running."""
        with self._lock:
            self._pending = None
            running = self._worker is not None
        if running:
            self._cancel.set()
            self.listener.on_status("cancelling...")
        return running

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until no generation runs or waits (for tests and scripts); TimeoutError after `timeout` seconds."""
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
            raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__} {timeout!r:.40}.")
        if not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, not {timeout!r}.")
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

    def save(self, result: GenerationResult) -> Path:
        """Write `result` as a PNG with its recipe embedded into `save_dir`; never overwrites a file."""
        return save_png_with_recipe(result.image, result.recipe, self.save_dir)

    # --- the worker thread --------------------------------------------------------------------
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
        finally:  # however this thread ends, the engine is idle afterwards (never "busy" forever)
            with self._lock:
                if self._worker is threading.current_thread():
                    self._worker = self._running_key = self._pending = None

    def _run(self, settings: dict) -> None:
        self._steps_done = 0
        try:
            # The pipeline's lock for the whole image (prompt encoding included): releasing the
            # pipeline cancels it; another caller's image is waited for, with a note.
            with pipeline_lock.using(self.pipe, self.who, cancel=self.cancel, cancelled=self._cancel.is_set,
                                     on_wait=self.listener.on_status):
                self.listener.on_start(settings)
                result = self._generate(settings)
            with self._lock:
                self.generations += 1
                self.cache[self.cache_key(settings)] = result
                while len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
                self.history = [result, *self.history][: self.history_size]
            self.listener.on_result(result, f"generated in {result.seconds:.2f} s", new=True)
        except BaseException as e:  # even KeyboardInterrupt: reported; the engine stays usable
            self.listener.on_failure(ValueError(RELEASED) if self.released else e, settings, self._steps_done)

    def _generate(self, settings: dict) -> GenerationResult:
        arguments = {k: v for k, v in settings.items() if k not in ("prompt", "negative_prompt")}
        resolve_arguments(self.pipe, **arguments)  # bad settings or a released pipeline: say so before encoding
        self.listener.on_status("encoding the prompt...")
        embeddings = self.prompts.get(settings["prompt"], settings["negative_prompt"])
        started = time.perf_counter()

        def on_step(step: int, total: int, latents) -> bool:
            if self._cancel.is_set():
                return True
            self._steps_done = step + 1
            self.listener.on_step(self._steps_done, total, time.perf_counter() - started, clean(latents))
            return False

        with PredictedCleanLatents(self.pipe) as clean:  # x_t is mostly noise mid-way: preview x0_hat
            return generate(self.pipe, embeddings=embeddings, callback=on_step, **arguments)


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
