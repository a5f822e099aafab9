"""modules/processing.py (1.10.1), reduced to the loop of process_images_inner.

Hooks run in the real order: before_process, process, then per batch before_process_batch,
process_batch, sampling, postprocess_batch, postprocess_batch_list, and per image
postprocess_image, postprocess_maskoverlay (not used here), overlay,
postprocess_image_after_composite, save, infotext; then the grid, Processed, postprocess.
`image_source(p, index, seed)` stands in for the model: tests set it. img2img with a mask builds
`overlay_images` as the real `init` does (the input outside the mask), and `apply_overlay` pastes
them over the model's output after `postprocess_image`: that composite is what is saved.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from modules import errors, images, script_callbacks, scripts, shared

image_source = None  # callable(p, index, seed) -> PIL image; set by tests
#: the model's denoiser during sampling: callable(x_in, sigma_in, text_cond, repeats, step, prompts) -> x_out;
#: None skips the sampling loop. Its outputs are x0 estimates (k-diffusion samplers) or eps
#: (timestep samplers), as `sampler_kind` says.
sampling_model = None
sampler_kind = "k-diffusion"


class CompVisDenoiser:  # k_diffusion.external: returns denoised x0
    pass


class CompVisTimestepsDenoiser:  # sd_samplers_timesteps: returns eps
    pass


_AND = re.compile(r"\bAND\b(?!_PERP|_SALT|_TOPK)")


def sample_loop(p, prompts):
    """The CFG part of sd_samplers_cfg_denoiser.CFGDenoiser.forward, once per step: x_in holds each
    image's cond rows (one per AND sub-prompt) then the uncond rows; the callbacks come before and
    after the model call; a step listed in p.skip_uncond_steps has no uncond rows (s_min_uncond)."""
    if sampling_model is None:
        return
    batch = len(prompts)
    repeats = [len(_AND.split(pr)) for pr in prompts]
    gen = torch.Generator().manual_seed(int(p.seeds[0]))
    x = torch.randn((batch, 4, p.height // 8, p.width // 8), generator=gen)
    sigmas = torch.linspace(14.6, 0.03, p.steps)
    inner = CompVisDenoiser() if sampler_kind == "k-diffusion" else CompVisTimestepsDenoiser()
    shared.state.sampling_steps = p.steps
    for step in range(p.steps):
        if shared.state.interrupted or shared.state.skipped:
            break  # sd_samplers_common.InterruptedException, caught by the sampler
        shared.state.sampling_step = step
        skip_uncond = step in getattr(p, "skip_uncond_steps", ())
        cond_x = [x[i] for i, n in enumerate(repeats) for _ in range(n)]
        x_in = torch.stack(cond_x + ([] if skip_uncond else list(x)))
        sigma = sigmas[step] if sampler_kind == "k-diffusion" else torch.tensor(999.0 - step)
        sigma_in = sigma.repeat(x_in.shape[0])
        text_cond = torch.zeros((sum(repeats), 77, 768))
        text_uncond = torch.zeros((batch, 77, 768))
        params = script_callbacks.CFGDenoiserParams(x_in, None, sigma_in, step, p.steps, text_cond, text_uncond, None)
        script_callbacks.cfg_denoiser_callback(params)
        x_out = sampling_model(params.x, params.sigma, params.text_cond, repeats, step, prompts)
        script_callbacks.cfg_denoised_callback(script_callbacks.CFGDenoisedParams(x_out, step, p.steps, inner))
        x = x_out[-batch:] if not skip_uncond else x_out[:batch]


def quote(text):
    """generation_parameters_copypaste.quote"""
    if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


@dataclass(repr=False)
class StableDiffusionProcessing:
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1
    sampler_name: str = "Euler a"
    sd_model: Any = None
    outpath_samples: str = None
    outpath_grids: str = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict = field(default_factory=dict)
    override_settings: dict = field(default_factory=dict)
    scripts: Any = None
    script_args: list = field(default_factory=list)
    comments: dict = field(default_factory=dict)

    def __post_init__(self):
        self.iteration = 0
        self.batch_index = 0
        self.color_corrections = None
        self.overlay_images = None
        self.all_prompts = self.all_seeds = self.prompts = self.seeds = None

    def comment(self, text):
        self.comments[text] = 1

    def save_samples(self) -> bool:
        return shared.opts.samples_save and not self.do_not_save_samples

    def sample_images(self, seeds):
        if self.scripts is not None:  # 1.10.1 calls it before every sampling, txt2img and img2img alike
            self.scripts.process_before_every_sampling(p=self, x=None, noise=None, c=None, uc=None)
        sample_loop(self, self.prompts)
        return [image_source(self, self.iteration * self.batch_size + i, s) for i, s in enumerate(seeds)]


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    hr_scale: float = 2.0

    def sample_images(self, seeds):
        out = super().sample_images(seeds)
        if self.enable_hr:  # the second pass upscales; hooks still see one final image per seed
            self.extra_generation_params["Hires upscale"] = self.hr_scale
            out = [im.resize((int(im.width * self.hr_scale), int(im.height * self.hr_scale))) for im in out]
        return out


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    init_images: list = None
    mask: Any = None
    mask_blur: int = 4
    inpainting_fill: int = 0
    inpaint_full_res: bool = False  # the real default is True ('only masked'): not modelled here
    denoising_strength: float = 0.75

    def init(self, all_prompts, all_seeds, all_subseeds):
        """The mask part of the real init: the input outside the mask becomes the overlay."""
        self.paste_to = None
        self.mask_for_overlay = None
        if self.mask is None:
            return
        if self.inpaint_full_res:
            raise NotImplementedError("inpaint 'only masked' is not modelled here")
        image_mask = self.mask.convert('L')
        if self.mask_blur > 0:
            image_mask = image_mask.filter(ImageFilter.GaussianBlur(self.mask_blur))
        image_mask = image_mask.resize((self.width, self.height))
        np_mask = np.clip(np.array(image_mask).astype(np.float32) * 2, 0, 255).astype(np.uint8)
        self.mask_for_overlay = Image.fromarray(np_mask)
        self.overlay_images = []
        for img in self.init_images:
            image = img.convert("RGB").resize((self.width, self.height))
            image_masked = Image.new('RGBa', (image.width, image.height))
            image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(self.mask_for_overlay.convert('L')))
            self.overlay_images.append(image_masked.convert('RGBA'))
        if len(self.init_images) == 1:
            self.overlay_images = self.overlay_images * self.batch_size


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None, all_seeds=None,
                 index_of_first_image=0, infotexts=None, comments=""):
        self.images = images_list
        self.prompt = p.prompt if isinstance(p.prompt, str) else p.prompt[0]
        self.seed = seed
        self.info = info
        self.comments = "".join(f"{c}\n" for c in p.comments)
        self.extra_generation_params = p.extra_generation_params
        self.index_of_first_image = index_of_first_image
        self.all_prompts = all_prompts or p.all_prompts
        self.all_seeds = all_seeds or p.all_seeds
        self.infotexts = infotexts or [info]

    def js(self):
        return json.dumps({
            "prompt": self.prompt, "all_prompts": self.all_prompts, "seed": self.seed, "all_seeds": self.all_seeds,
            "extra_generation_params": self.extra_generation_params,
            "index_of_first_image": self.index_of_first_image, "infotexts": self.infotexts,
        }, default=lambda o: None)


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0,
                    use_main_prompt=False, index=None, all_negative_prompts=None):
    """As 1.10.1: extra_generation_params values may be lists (indexed by `index`) or callables
    called with this function's locals (`p`, `index`, `use_main_prompt`, ...); None drops the key."""
    if use_main_prompt:
        index = 0
    elif index is None:
        index = position_in_batch + iteration * p.batch_size
    prompt_text = (p.prompt if isinstance(p.prompt, str) else p.prompt[0]) if use_main_prompt else all_prompts[index]
    generation_params = {"Steps": p.steps, "Sampler": p.sampler_name, "CFG scale": p.cfg_scale,
                         "Seed": p.all_seeds[0] if use_main_prompt else all_seeds[index], "Size": f"{p.width}x{p.height}",
                         **p.extra_generation_params}
    for key, value in generation_params.items():
        try:
            if isinstance(value, list):
                generation_params[key] = value[index]
            elif callable(value):
                generation_params[key] = value(**locals())
        except Exception:
            errors.report(f'Error creating infotext for key "{key}"', exc_info=True)
            generation_params[key] = None
    text = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in generation_params.items() if v is not None)
    return f"{prompt_text}\n{text}".strip()


def apply_overlay(image, paste_loc, overlay):
    if overlay is None:
        return image, image.copy()
    if paste_loc is not None:
        raise NotImplementedError("inpaint 'only masked' (paste_to) is not modelled here")
    original_denoised_image = image.copy()
    image = image.convert('RGBA')
    image.alpha_composite(overlay)
    image = image.convert('RGB')
    return image, original_denoised_image


def process_images(p):
    if p.scripts is not None:
        p.scripts.before_process(p)
    return process_images_inner(p)


def process_images_inner(p):
    seed = p.seed if p.seed != -1 else 1234
    p.all_prompts = list(p.prompt) if isinstance(p.prompt, list) else [p.prompt] * (p.batch_size * p.n_iter)
    p.all_seeds = [int(seed) + x for x in range(len(p.all_prompts))]
    if p.scripts is not None:
        p.scripts.process(p)
    if hasattr(p, "init"):
        p.init(p.all_prompts, p.all_seeds, p.all_seeds)
    infotexts, output_images = [], []
    for n in range(p.n_iter):
        p.iteration = n
        p.prompts = p.all_prompts[n * p.batch_size:(n + 1) * p.batch_size]
        p.seeds = p.all_seeds[n * p.batch_size:(n + 1) * p.batch_size]
        if p.scripts is not None:
            p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.seeds)
            p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.seeds)
        samples = p.sample_images(p.seeds)
        x_samples = torch.stack([torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1) for im in samples])
        if p.scripts is not None:
            p.scripts.postprocess_batch(p, x_samples, batch_number=n)
            batch_params = scripts.PostprocessBatchListArgs(list(x_samples))
            p.scripts.postprocess_batch_list(p, batch_params, batch_number=n)
            x_samples = batch_params.images

        def infotext(index=0, use_main_prompt=False):
            return create_infotext(p, p.prompts, p.seeds, p.seeds, use_main_prompt=use_main_prompt, index=index)

        save_samples = p.save_samples()
        for i, x_sample in enumerate(x_samples):
            p.batch_index = i
            x_sample = (255. * np.moveaxis(x_sample.cpu().numpy(), 0, 2)).round().astype(np.uint8)
            image = Image.fromarray(x_sample)
            if p.scripts is not None:
                pp = scripts.PostprocessImageArgs(image)
                p.scripts.postprocess_image(p, pp)
                image = pp.image
            if not shared.opts.overlay_inpaint:
                overlay = None
            elif getattr(p, "overlay_images", None) is not None and i < len(p.overlay_images):
                overlay = p.overlay_images[i]
            else:
                overlay = None
            image, _ = apply_overlay(image, getattr(p, "paste_to", None), overlay)
            if p.scripts is not None:
                pp = scripts.PostprocessImageArgs(image)
                p.scripts.postprocess_image_after_composite(p, pp)
                image = pp.image
            if save_samples:
                images.save_image(image, p.outpath_samples, "", p.seeds[i], p.prompts[i], "png", info=infotext(i), p=p)
            text = infotext(i)
            infotexts.append(text)
            image.info["parameters"] = text
            output_images.append(image)
    index_of_first_image = 0
    if len(output_images) > 1 and shared.opts.return_grid and not p.do_not_save_grid:
        grid = images.image_grid(output_images, p.batch_size)
        text = infotext(use_main_prompt=True)
        infotexts.insert(0, text)
        grid.info["parameters"] = text
        output_images.insert(0, grid)
        index_of_first_image = 1
        if shared.opts.grid_save:
            images.save_image(grid, p.outpath_grids, "grid", p.all_seeds[0], p.all_prompts[0], "png",
                              info=text, p=p, grid=True)
    res = Processed(p, output_images, seed=p.all_seeds[0], info=infotexts[0], index_of_first_image=index_of_first_image,
                    infotexts=infotexts)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res
