import pytest
import torch

from helpers.generation.latent_preview import (
    SD3_LATENT_RGB_BIAS,
    SD3_LATENT_RGB_FACTORS,
    latent_preview,
    latents_to_rgb,
)


def test_zero_latents_give_the_bias_colour():
    rgb = latents_to_rgb(torch.zeros(1, 16, 4, 6))
    assert rgb.shape == (4, 6, 3) and rgb.dtype == torch.uint8
    expected = [round((b + 1) * 127.5) for b in SD3_LATENT_RGB_BIAS]
    assert [int(v) for v in rgb[0, 0]] == pytest.approx(expected, abs=1)


def test_each_channel_contributes_its_row_of_factors():
    latents = torch.zeros(16, 2, 2)
    latents[2] = 1.0  # channel 2 is the reddest row of the table
    rgb = latents_to_rgb(latents)[0, 0].float()
    expected = [(f + b + 1) * 127.5 for f, b in zip(SD3_LATENT_RGB_FACTORS[2], SD3_LATENT_RGB_BIAS, strict=True)]
    assert rgb.tolist() == pytest.approx(expected, abs=1)
    assert rgb[0] > rgb[1] > rgb[2]


def test_preview_is_one_pixel_per_latent_or_resized():
    latents = torch.randn(1, 16, 8, 12, dtype=torch.bfloat16)
    assert latent_preview(latents).size == (12, 8)
    assert latent_preview(latents, size=(96, 64)).size == (96, 64)


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match="16 channels"):
        latents_to_rgb(torch.zeros(1, 4, 8, 8))


# --- x0_hat: the predicted clean latents ----------------------------------------------------------

def _sd3_scheduler(steps=28, **config):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, **config)  # SD3.5's scheduler config
    scheduler.set_timesteps(steps)
    return scheduler


def test_x0_hat_recovers_the_clean_latents_the_scheduler_noised():
    """Noise x0 with the scheduler's own forward formula (scale_noise), step it with the true velocity
    eps - x0: every step's x0_hat is x0 again, and the half-way sigma is still about 0.75 (the noise
    a raw-latent preview shows)."""
    from helpers.generation.latent_preview import predicted_clean_latents

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 16, 8, 8, generator=g)
    scheduler = _sd3_scheduler()
    assert 0.7 < float(scheduler.sigmas[14]) < 0.8
    for i, t in enumerate(scheduler.timesteps):
        x_t = scheduler.scale_noise(x0, t[None], eps)
        x_next = scheduler.step(eps - x0, t, x_t, return_dict=False)[0]
        estimate = predicted_clean_latents(x_t, x_next, scheduler.sigmas[i], scheduler.sigmas[i + 1])
        assert torch.allclose(estimate, x0, atol=1e-4), i
        if i <= len(scheduler.timesteps) // 2:  # the raw latents are far from the image for half the steps
            assert (x_t - x0).abs().mean() > 0.5


def test_x0_hat_equals_the_schedulers_own_x0_formula():
    """FlowMatchEulerDiscreteScheduler's stochastic step computes x0 = sample - sigma * model_output,
    then re-noises it with a noise drawn from the generator: with that noise known, its x0 is read back
    and equals x0_hat computed from a plain Euler step with the same velocity."""
    from diffusers.utils.torch_utils import randn_tensor

    from helpers.generation.latent_preview import predicted_clean_latents

    g = torch.Generator().manual_seed(1)
    x_t, v = torch.randn(1, 16, 6, 4, generator=g), torch.randn(1, 16, 6, 4, generator=g)
    euler, stochastic = _sd3_scheduler(10), _sd3_scheduler(10, stochastic_sampling=True)
    for i in (0, 4, 8):
        euler._step_index = stochastic._step_index = i
        t = euler.timesteps[i]
        sigma, sigma_next = euler.sigmas[i], euler.sigmas[i + 1]
        x_next = euler.step(v, t, x_t, return_dict=False)[0]
        noisy = stochastic.step(v, t, x_t, generator=torch.Generator().manual_seed(7), return_dict=False)[0]
        noise = randn_tensor(x_t.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
        schedulers_x0 = (noisy - sigma_next * noise) / (1 - sigma_next)
        ours = predicted_clean_latents(x_t, x_next, sigma, sigma_next)
        assert torch.allclose(ours, schedulers_x0, atol=1e-4), i
        assert torch.allclose(ours, x_t - sigma * v, atol=1e-4)


def test_x0_hat_refuses_steps_that_do_not_denoise():
    from helpers.generation.latent_preview import predicted_clean_latents

    x = torch.zeros(1, 16, 2, 2)
    with pytest.raises(ValueError, match="lowers sigma"):
        predicted_clean_latents(x, x, 0.5, 0.5)
    with pytest.raises(ValueError, match="differ in shape"):
        predicted_clean_latents(x, torch.zeros(1, 16, 2, 4), 0.5, 0.4)


def test_predicted_clean_latents_in_a_real_pipeline_call(tiny_pipe):
    """On the stand-in, through helpers.generate's step callback: x0_hat = x_t - sigma * v, with v the
    guided velocity the scheduler got (the transformer's two halves combined by the CFG formula, read
    by a hook), and on the last step (sigma = 0) x0_hat is the final latents."""
    import helpers
    from helpers.generation.latent_preview import PredictedCleanLatents

    guidance, steps = 4.0, 5
    inputs, velocities, estimates, latents_seen = [], [], [], []

    def record(module, args, kwargs, out):
        inputs.append(kwargs["hidden_states"].clone())
        velocities.append(out[0].clone())

    hook = tiny_pipe.transformer.register_forward_hook(record, with_kwargs=True)

    def on_step(step, total, latents):
        estimates.append(clean(latents))
        latents_seen.append(latents.clone())

    try:
        with PredictedCleanLatents(tiny_pipe) as clean:
            helpers.generate(tiny_pipe, "a fox", guidance_scale=guidance, num_inference_steps=steps, callback=on_step)
    finally:
        hook.remove()
    assert len(estimates) == steps and clean._hook is None  # the hook is gone after the block
    sigmas = tiny_pipe.scheduler.sigmas
    for i, (x_in, out) in enumerate(zip(inputs, velocities, strict=True)):
        uncond, cond = out.chunk(2)
        v = uncond + guidance * (cond - uncond)
        assert torch.allclose(estimates[i], x_in[:1].float() - sigmas[i] * v.float(), atol=1e-4), i
    assert torch.equal(estimates[-1], latents_seen[-1].float())
    assert not torch.allclose(estimates[0], latents_seen[0].float(), atol=1e-2)


def test_predicted_clean_latents_needs_its_block_and_a_live_pipeline(tiny_pipe):
    from helpers.generation.latent_preview import PredictedCleanLatents

    clean = PredictedCleanLatents(tiny_pipe)
    with pytest.raises(RuntimeError, match="must be open"):
        clean(torch.zeros(1, 16, 8, 8))

    class Released:
        transformer, scheduler = None, tiny_pipe.scheduler

    with pytest.raises(ValueError, match="released"):
        PredictedCleanLatents(Released())


# --- TAESD3: the opt-in sharper preview -------------------------------------------------------------

def _saved_tiny_autoencoder(folder, latent_channels=16):
    """A randomly initialised AutoencoderTiny of TAESD3's shape, saved the way the Hub holds it."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(latent_channels=latent_channels, scaling_factor=1.5305).save_pretrained(folder)
    return folder


def test_tiny_autoencoder_preview_loads_the_usual_way_and_decodes_full_size(tmp_path):
    """Loaded with AutoencoderTiny.from_pretrained (a local folder here; "madebyollin/taesd3" on the
    Hub), it decodes 8x8 px per latent: latents / scaling_factor, unshifted, as TAESD3's card says."""
    from diffusers import AutoencoderTiny

    from helpers.generation.latent_preview import tiny_autoencoder_preview

    decoder = AutoencoderTiny.from_pretrained(_saved_tiny_autoencoder(tmp_path / "taesd3"))
    latents = torch.randn(1, 16, 6, 10, generator=torch.Generator().manual_seed(2))
    image = tiny_autoencoder_preview(decoder, latents)
    assert image.size == (80, 48) and image.mode == "RGB"
    with torch.no_grad():
        expected = decoder.decode(latents / 1.5305, return_dict=False)[0][0]
    expected = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert image.tobytes() == expected.tobytes()
    assert tiny_autoencoder_preview(decoder, latents[0], size=(40, 24)).size == (40, 24)


def test_tiny_autoencoder_preview_refuses_the_wrong_decoder(tmp_path):
    from diffusers import AutoencoderTiny

    from helpers.generation.latent_preview import tiny_autoencoder_preview

    sd15_shaped = AutoencoderTiny.from_pretrained(_saved_tiny_autoencoder(tmp_path / "taesd", latent_channels=4))
    with pytest.raises(ValueError, match="madebyollin/taesd3"):
        tiny_autoencoder_preview(sd15_shaped, torch.zeros(1, 4, 8, 8))
    with pytest.raises(TypeError, match="AutoencoderTiny"):
        tiny_autoencoder_preview(object(), torch.zeros(1, 16, 8, 8))
