"""The variational saccader (Ramapuram et al., "Variational Saccading", BMVC 2019; MODEL.md).

Per glimpse t: locate (posterior q(z_t | x̃, h_{t−1}) and learned prior p(z_t | h_{t−1}) over
z = (scale, x, y); with `locator="heatmap"` the centre (x, y) is instead a cell of a grid over the
proxy, drawn from a categorical posterior scored by a conv net on the proxy, see `HeatmapLocator`)
→ glimpse (the box of z_t read from the original through a region reader) →
classify (a_t from [h̄_{t−1}, g_t]); the LSTM core then steps on [f, φ_z(z_t)] (+ g_t when
`feed_glimpse`). The logits come from the mean of the a_t; a proxy decoder on [φ_z(z_t), h̄_{t−1}]
reconstructs the proxy (the VAE half).

Shape legend: B batch, T glimpses, K classes, L hidden width, S LSTM layers, C channels,
H height, W width (proxy side P), N glimpse window side, 3 = z = (scale, x, y),
4 = a normalised box (y0, x0, y1, x1), G = grid cells of the heat-map locator.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import SaccaderConfig
from model.glimpse import RegionReader, centre_to_boxes, latent_to_boxes, read_glimpses
from model.interface import Batch, BatchClassifier, Prediction
from model.layers import SmallResNet, mlp, resize_square
from model.loss import (
    LossParts,
    ObjectiveConfig,
    count_targets,
    gaussian_kl,
    location_nll,
    object_targets,
    reconstruction_nll,
    saccader_objective,
)

LSTM_LAYERS = 2


@dataclass
class SaccaderOutput:
    """Everything one forward pass produces; the loss and the evaluation pick what they need."""

    logits_BK: torch.Tensor  # from the per-glimpse features a_t (their mean, or concatenated)
    # the same head on each a_t alone (auxiliary loss), or the part head (config.class_parts)
    glimpse_logits_BTK: torch.Tensor
    boxes_BT4: torch.Tensor  # where each glimpse looked
    z_BT3: torch.Tensor  # the latents used (samples in training, posterior means at inference)
    kl_BT: torch.Tensor  # KL(q_t ‖ p_t) of each glimpse's location, summed over its parts
    log_q_BT: torch.Tensor  # log q of the sampled choice (heatmap: the cell), for the score term
    # proxy reconstruction (Bernoulli logits or Gaussian means); None when not asked for
    recon_BTCHW: torch.Tensor | None
    # heat map: each glimpse's whole log q(cell) (the supervised location term); else None
    log_q_BTG: torch.Tensor | None = None


@dataclass
class _Location:
    """One step of `locate`: the latent used, its box, its KL to the prior and its log q."""

    z_B3: torch.Tensor  # (scale, x, y): x, y the box centre in [−1, 1] (heatmap) or its tanh⁻¹
    boxes_B4: torch.Tensor
    kl_B: torch.Tensor
    log_q_B: torch.Tensor
    log_q_BG: torch.Tensor | None = None  # heat map: the posterior over every cell


@dataclass
class _Scene:
    """Per batch, computed once before the glimpse loop."""

    sizes: list[tuple[int, int]]  # (H, W) of each original
    keys_BGL: torch.Tensor | None = None  # heat map: per-cell features of the proxy
    brightness_BG: torch.Tensor | None = None  # heat map: per-cell brightest blob
    peaks_BG2: torch.Tensor | None = None  # heat map (refine): that blob's centre, (x, y)


@dataclass
class _Gaussian:
    """A draw from the paper's diagonal Gaussian q(z | ·) and its KL to the prior p(z | h̄)."""

    z_B3: torch.Tensor
    kl_B3: torch.Tensor
    log_q_B3: torch.Tensor


@dataclass
class _Cell:
    """A draw from the heat-map's categorical q(cell | x̃, h̄)."""

    centre_B2: torch.Tensor  # (x, y) in [−1, 1]; carries the straight-through gradient if asked
    key_BL: torch.Tensor  # the chosen cell's features
    kl_B: torch.Tensor  # KL(q(cell) ‖ p(cell))
    log_q_B: torch.Tensor  # log q of the chosen cell


def dilate_cells(cells_BG: torch.Tensor, grid: int, radius: int) -> torch.Tensor:
    """B×G: the cells within `radius` cells (either way, on the grid×grid heat map) of a cell
    of `cells_BG`; radius 0: `cells_BG` itself."""
    if radius == 0:
        return cells_BG
    cells_B1HW = cells_BG.view(-1, 1, grid, grid).float()
    grown_B1HW = F.max_pool2d(cells_B1HW, 2 * radius + 1, stride=1, padding=radius)
    return grown_B1HW.flatten(1) > 0


class HeatmapLocator(nn.Module):
    """q(cell | x̃, h̄) and p(cell | h̄) over a G×G grid of proxy cells.

    A small conv net on the proxy gives one L-vector (a key) per cell; a query from h̄ scores them
    by a dot product. The keys are translation-equivariant, so "a bright blob here" is learnt once
    for every position instead of position by position, which the pooled-vector MLP posterior
    must do (MODEL.md, "Known difficulties"). Two coordinate channels let the query also prefer
    places. Cell centres in [−1, 1] become the glimpse centres. An optional learnable brightness
    term (`saliency`) adds each cell's brightest blob to its score.
    """

    def __init__(
        self,
        proxy_channels: int,
        hidden: int,
        width: int,
        size: int,
        stride: int,
        saliency: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(proxy_channels + 2, width, 3, padding=1), nn.ELU()]
        for _ in range(int(math.log2(stride))):
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ELU()]
        layers.append(nn.Conv2d(width, hidden, 1))
        self.keys = nn.Sequential(*layers)
        self.query = nn.Linear(hidden, hidden)
        self.size, self.stride = size, stride
        self.grid = math.ceil(size / stride)
        self.prior = nn.Linear(hidden, self.grid**2)  # p(cell | h̄): no proxy, as the paper's prior
        self.saliency: nn.Parameter | None = None
        if saliency > 0:
            self.saliency = nn.Parameter(torch.tensor(float(saliency)))
            with torch.no_grad():  # learned scores start at zero: brightness leads at first
                self.query.weight.zero_()
                self.query.bias.zero_()
        centres_G = (torch.arange(self.grid, dtype=torch.float32) + 0.5) / self.grid * 2 - 1
        cy_GG, cx_GG = torch.meshgrid(centres_G, centres_G, indexing="ij")
        self.register_buffer("centres_G2", torch.stack([cx_GG, cy_GG], -1).view(-1, 2), False)

    def keys_of(self, proxy_BCPP: torch.Tensor) -> torch.Tensor:
        """B×G×L keys, computed once per image (the proxy at any size: resized to `size`)."""
        proxy_BCPP = resize_square(proxy_BCPP, self.size)
        B, _, P, _ = proxy_BCPP.shape
        ramp_P = torch.linspace(-1, 1, P, device=proxy_BCPP.device, dtype=proxy_BCPP.dtype)
        coords_B2PP = torch.stack(torch.meshgrid(ramp_P, ramp_P, indexing="ij")).expand(B, 2, P, P)
        keys_BLgg = self.keys(torch.cat([proxy_BCPP, coords_B2PP], dim=1))
        return keys_BLgg.flatten(2).transpose(1, 2)

    def brightness(self, proxy_BCPP: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per cell, the brightest stride×stride mean of the proxy (a blob detector; B×G,
        relative to the image's brightest cell) and that blob's centre ((x, y) in [−1, 1],
        B×G×2)."""
        grey_B1PP = resize_square(proxy_BCPP, self.size).mean(dim=1, keepdim=True)
        s, P = self.stride, grey_B1PP.shape[-1]
        blobs_B1PP = F.avg_pool2d(F.pad(grey_B1PP, (0, s - 1, 0, s - 1)), s, stride=1)
        pad = -P % s
        cells_B1gg, at_B1gg = F.max_pool2d(
            F.pad(blobs_B1PP, (0, pad, 0, pad)), s, return_indices=True
        )
        cells_BG, at_BG = cells_B1gg.flatten(1), at_B1gg.flatten(1)
        # the blob at padded row r, column c covers proxy pixels [r, r + s) × [c, c + s)
        row_BG, col_BG = at_BG // (P + pad), at_BG % (P + pad)
        peaks_BG2 = torch.stack([col_BG, row_BG], dim=-1).to(grey_B1PP.dtype)
        peaks_BG2 = ((peaks_BG2 + s / 2) / P * 2 - 1).clamp(-1, 1)
        # Per image, relative to its brightest cell: a gain then means the same margin over
        # the other cells whatever the exposure (a dim image's digits are still its blobs).
        return cells_BG / cells_BG.amax(dim=1, keepdim=True).clamp_min(1e-3), peaks_BG2

    def object_cells(self, gt_boxes: list[torch.Tensor]) -> torch.Tensor:
        """B×G: the cells holding the centre of at least one of the image's objects (N×4
        normalised (y0, x0, y1, x1) boxes each; the grid spans the image, as the boxes do)."""
        cells_BG = self.centres_G2.new_zeros(len(gt_boxes), self.grid**2, dtype=torch.bool)
        for b, boxes_N4 in enumerate(gt_boxes):
            if boxes_N4.numel() == 0:
                continue
            centre_N2 = torch.stack(
                [(boxes_N4[:, 1] + boxes_N4[:, 3]) / 2, (boxes_N4[:, 0] + boxes_N4[:, 2]) / 2], 1
            )
            col_N, row_N = (
                (centre_N2 * self.grid).long().clamp(0, self.grid - 1).to(cells_BG.device).T
            )
            cells_BG[b, row_N * self.grid + col_N] = True
        return cells_BG

    def logits(
        self,
        keys_BGL: torch.Tensor,
        h_BL: torch.Tensor,
        visited_B4s: list[torch.Tensor],
        brightness_BG: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior and prior log-probabilities over cells (B×G each); cells whose centre lies
        in an earlier box (`visited_B4s`, normalised boxes) are masked out of both."""
        scores_BG = torch.einsum("bgl,bl->bg", keys_BGL, self.query(h_BL)) / math.sqrt(
            keys_BGL.shape[2]
        )
        prior_BG = self.prior(h_BL)
        if self.saliency is not None and brightness_BG is not None:
            # In the prior too: the KL then penalises only what q learnt beyond brightness.
            # Without it the KL pulls q towards a flat prior over thousands of cells, training
            # glimpses turn random and the glimpse classifier stops learning (measured).
            scores_BG = scores_BG + self.saliency * brightness_BG
            prior_BG = prior_BG + self.saliency * brightness_BG
        cx_G, cy_G = ((self.centres_G2[:, i] + 1) / 2 for i in range(2))
        for boxes_B4 in visited_B4s:
            y0, x0, y1, x1 = (boxes_B4[:, i : i + 1].detach() for i in range(4))
            inside_BG = (y0 <= cy_G) & (cy_G < y1) & (x0 <= cx_G) & (cx_G < x1)
            all_masked_B1 = inside_BG.all(dim=1, keepdim=True)
            # the prior knows the rule too: the KL then measures choices, not the mask
            masked_BG = inside_BG & ~all_masked_B1
            scores_BG = scores_BG.masked_fill(masked_BG, -1e4)
            prior_BG = prior_BG.masked_fill(masked_BG, -1e4)
        return F.log_softmax(scores_BG, dim=1), F.log_softmax(prior_BG, dim=1)

    def choose(
        self,
        log_q_BG: torch.Tensor,
        log_p_BG: torch.Tensor,
        keys_BGL: torch.Tensor,
        *,
        sample: bool,
        straight_through: bool,
        centres_BG2: torch.Tensor | None = None,
        guide_BG: torch.Tensor | None = None,
        guide_uniform: bool = False,
    ) -> _Cell:
        """A cell drawn from q (training) or its mode (inference), and what comes with it: its
        centre, or its entry of `centres_BG2` (per image: the brightest blob's, `refine`).
        `guide_BG` (training, `guide_glimpses`): draw from q restricted to those cells where an
        image has one left; the KL and log q stay the whole posterior's. `guide_uniform`: draw
        uniformly among those cells instead (`ObjectiveConfig.guide_radius`)."""
        if sample:
            draw_BG = log_q_BG
            if guide_BG is not None:
                allowed_BG = guide_BG & (log_q_BG > -1e3)  # not masked by inhibition of return
                allowed_BG |= ~allowed_BG.any(dim=1, keepdim=True)  # none left: the whole q
                base_BG = torch.zeros_like(log_q_BG) if guide_uniform else log_q_BG.detach()
                draw_BG = base_BG.masked_fill(~allowed_BG, -1e9)
            cell_B = torch.distributions.Categorical(logits=draw_BG).sample()
        else:
            cell_B = log_q_BG.argmax(dim=1)
        one_hot_BG = F.one_hot(cell_B, log_q_BG.shape[1]).to(log_q_BG.dtype)
        if straight_through:  # forward: the cell itself; backward: the softmax's gradient
            q_BG = log_q_BG.exp()
            one_hot_BG = one_hot_BG + q_BG - q_BG.detach()
        centre_B2 = (
            one_hot_BG @ self.centres_G2
            if centres_BG2 is None
            else torch.einsum("bg,bgc->bc", one_hot_BG, centres_BG2)
        )
        return _Cell(
            centre_B2=centre_B2,
            key_BL=keys_BGL[torch.arange(len(cell_B), device=cell_B.device), cell_B],
            kl_B=(log_q_BG.exp() * (log_q_BG - log_p_BG)).sum(dim=1),
            log_q_B=log_q_BG.gather(1, cell_B[:, None]).squeeze(1),
        )


class Saccader(BatchClassifier):
    """Variational saccader: T glimpses of W×W pixels chosen from the proxy, then a class.

    Train through `loss` with an `ObjectiveConfig`; `predict` is deterministic in eval mode and
    returns the boxes.
    """

    def __init__(self, config: SaccaderConfig) -> None:
        super().__init__()
        self.config = config
        self._training_sides: tuple[float, float] | None = None  # set_training_sides
        L, P, C_proxy = config.hidden, config.proxy_size, config.proxy_channels
        encoder = {"width": config.encoder_width, "blocks": list(config.encoder_blocks)}
        self.proxy_encoder = SmallResNet(C_proxy, L, **encoder)  # φ_x
        # The glimpse encoder sees T very different steps (later glimpses are often background):
        # batch statistics per step in training but running ones shared by all steps at
        # inference would differ, hence `glimpse_norm` ("group": per-example statistics).
        self.glimpse_encoder = SmallResNet(
            config.in_channels,
            L,
            **encoder,
            norm=config.glimpse_norm,
            norm_eps=config.glimpse_norm_eps,
        )
        core_in = 3 * L if config.feed_glimpse else 2 * L
        self.core = nn.LSTM(core_in, L, num_layers=LSTM_LAYERS, batch_first=True)
        self.heatmap = (
            HeatmapLocator(
                C_proxy,
                L,
                config.encoder_width,
                config.heatmap_size,
                config.heatmap_stride,
                config.heatmap_saliency,
            )
            if config.locator == "heatmap"
            else None
        )
        # q(z | ·) on [f, h̄], and with the heat map also on the chosen cell's key (its offset)
        self.posterior = mlp(3 * L if self.heatmap is not None else 2 * L, L, 6)
        self.prior = mlp(L, L, 6)  # h̄ → (μ_p, log σ_p²)
        self.phi_z = mlp(3, L, L)
        self.decoder = mlp(2 * L, L, C_proxy * P * P)  # [φ_z(z), h̄] → x̃
        self.glimpse_head = mlp(2 * L, L, L)  # [h̄, g] → a_t
        concat = config.classifier_input == "concat"
        self.classifier = mlp(config.glimpses * L if concat else L, L, config.num_classes)
        # The per-glimpse head (auxiliary and score terms) reads one a_t: the classifier itself
        # when it reads their mean, a head of its own when it reads them concatenated.
        self.glimpse_classifier = (
            mlp(L, L, config.num_classes) if concat and not config.class_parts else None
        )
        self.part_head: nn.Module | None = None
        if config.class_parts:
            n_parts = 1 + max(max(p) for p in config.class_parts)
            self.part_head = mlp(L, L, n_parts)
            mask_KP = torch.zeros(config.num_classes, n_parts, dtype=torch.bool)
            for k, parts in enumerate(config.class_parts):
                mask_KP[k, list(parts)] = True
            self.register_buffer("part_mask_KP", mask_KP, persistent=False)
        with torch.no_grad():
            # q(z) starts narrow and input-independent in its variance: early training glimpses
            # are then near the mean, not random crops (MODEL.md, "Known difficulties").
            out_layer = self.posterior[-1]
            out_layer.weight[3:].zero_()
            out_layer.bias[3:].fill_(config.posterior_logvar_init)
            if self.heatmap is not None:  # offsets start at the cell centre
                out_layer.weight[1:3].zero_()
                out_layer.bias[1:3].zero_()

    def set_training_sides(self, sides: tuple[float, float] | None) -> None:
        """Box sides (smallest, largest: fractions of the shorter image side) of training passes
        in place of the config's, e.g. a curriculum's (`model.step.BoxCurriculum`); None: the
        config's. Evaluation and inference always use the config's own sides."""
        self._training_sides = sides

    def forward(
        self,
        proxy_BCHW: torch.Tensor,
        reader: RegionReader,
        *,
        sample: bool | None = None,
        reconstruct: bool = True,
        guide_BG: torch.Tensor | None = None,
        guide_uniform: bool = False,
    ) -> SaccaderOutput:
        """T glimpses and the class scores. `sample`: draw z from q (default: in training).
        `reconstruct`: decode the proxy (the bound's term; a prediction does not need it).
        `guide_BG`, `guide_uniform`: the cells sampled glimpses are drawn among, and how
        (`HeatmapLocator.choose`)."""
        sample = self.training if sample is None else sample
        cfg = self.config
        f_BL = self.proxy_encoder(resize_square(proxy_BCHW, cfg.proxy_size))
        state = self._initial_state(f_BL)
        # The one choice of locator: each returns a `_Location` per glimpse.
        if self.heatmap is None:  # the paper's: z = (scale, x, y) from the Gaussian posterior
            locate = functools.partial(self._locate_gaussian, sizes=reader.image_sizes())
        else:  # a cell of the proxy's heat map, then the Gaussian's scale (and offset)
            locate = functools.partial(
                self._locate_heatmap,
                scene=self._scene(proxy_BCHW, reader),
                guide_BG=guide_BG,
                guide_uniform=guide_uniform,
            )
        a, recon, steps = [], [], []
        for _ in range(cfg.glimpses):
            h_BL = state[0].mean(dim=0)  # h̄_{t−1}: mean over the LSTM layers
            where: _Location = locate(f_BL, h_BL, [s.boxes_B4 for s in steps], sample=sample)
            g_BL = self.glimpse_encoder(
                read_glimpses(
                    reader,
                    where.boxes_B4,
                    cfg.window,
                    level=cfg.pooled_level,
                    blend=cfg.glimpse_blend,
                )
            )
            a.append(self.glimpse_head(torch.cat([h_BL, g_BL], dim=1)))
            e_BL = self.phi_z(where.z_B3)
            if reconstruct:
                recon.append(self.decoder(torch.cat([e_BL, h_BL], dim=1)))
            core_in = [f_BL, e_BL, g_BL] if cfg.feed_glimpse else [f_BL, e_BL]
            _, state = self.core(torch.cat(core_in, dim=1).unsqueeze(1), state)
            steps.append(where)
        return self._output(torch.stack(a, dim=1), steps, recon)

    def _output(
        self, a_BTL: torch.Tensor, steps: list[_Location], recon: list[torch.Tensor]
    ) -> SaccaderOutput:
        """The glimpses' features classified, and the steps' records stacked over T."""
        cfg = self.config
        heads = (self.part_head, self.glimpse_classifier, self.classifier)
        head = next(h for h in heads if h is not None)
        B = a_BTL.shape[0]
        pooled_BX = a_BTL.flatten(1) if cfg.classifier_input == "concat" else a_BTL.mean(dim=1)
        log_q_BG = [s.log_q_BG for s in steps]
        return SaccaderOutput(
            logits_BK=self.classifier(pooled_BX),
            glimpse_logits_BTK=head(a_BTL),
            boxes_BT4=torch.stack([s.boxes_B4 for s in steps], dim=1),
            z_BT3=torch.stack([s.z_B3 for s in steps], dim=1),
            kl_BT=torch.stack([s.kl_B for s in steps], dim=1),
            log_q_BT=torch.stack([s.log_q_B for s in steps], dim=1),
            recon_BTCHW=torch.stack(recon, dim=1).view(
                B, cfg.glimpses, cfg.proxy_channels, cfg.proxy_size, cfg.proxy_size
            )
            if recon
            else None,
            log_q_BTG=None if log_q_BG[0] is None else torch.stack(log_q_BG, dim=1),
        )

    def _scene(self, proxy_BCHW: torch.Tensor, reader: RegionReader) -> _Scene:
        """What every heat-map step reads: the image sizes and, once per image, the heat map's
        keys and brightness."""
        assert self.heatmap is not None
        scene = _Scene(sizes=reader.image_sizes(), keys_BGL=self.heatmap.keys_of(proxy_BCHW))
        # brightness only where it is used: the prior, or the refined box centres
        if self.heatmap.saliency is not None or self.config.heatmap_refine:
            brightness_BG, peaks_BG2 = self.heatmap.brightness(proxy_BCHW)
            scene.brightness_BG = brightness_BG if self.heatmap.saliency is not None else None
            scene.peaks_BG2 = peaks_BG2 if self.config.heatmap_refine else None
        return scene

    def _initial_state(self, f_BL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LSTM (h, c), each S×B×L: zeros, plus N(0, σ²) noise in training (the reference's)."""
        h_SBL = f_BL.new_zeros(LSTM_LAYERS, f_BL.shape[0], self.config.hidden)
        c_SBL = torch.zeros_like(h_SBL)
        if self.training and self.config.init_noise > 0:
            h_SBL = h_SBL + self.config.init_noise * torch.randn_like(h_SBL)
            c_SBL = c_SBL + self.config.init_noise * torch.randn_like(c_SBL)
        return h_SBL, c_SBL

    def _gaussian(self, q_in_BX: torch.Tensor, h_BL: torch.Tensor, *, sample: bool) -> _Gaussian:
        """z from q(z | ·) (a reparameterised sample, or its mean), its KL and log q."""
        mu_B3, logvar_B3 = self.posterior(q_in_BX).chunk(2, dim=1)
        prior_mu_B3, prior_logvar_B3 = self.prior(h_BL).chunk(2, dim=1)
        z_B3 = mu_B3
        if sample:
            z_B3 = mu_B3 + torch.randn_like(mu_B3) * (0.5 * logvar_B3).exp()
        # log N(z; μ, σ²) of the sample held fixed: its gradient is the score function.
        eps_B3 = (z_B3.detach() - mu_B3) * (-0.5 * logvar_B3).exp()
        return _Gaussian(
            z_B3=z_B3,
            kl_B3=gaussian_kl(mu_B3, logvar_B3, prior_mu_B3, prior_logvar_B3),
            log_q_B3=-0.5 * (eps_B3**2 + logvar_B3 + math.log(2 * math.pi)),
        )

    def _sides(self) -> dict[str, float]:
        """The box sides' range: the config's, or in training a curriculum's."""
        lo, hi = self.config.min_image_fraction, self.config.max_image_fraction
        if self.training and self._training_sides is not None:
            lo, hi = self._training_sides
        return {"min_fraction": lo, "max_fraction": hi}

    def _locate_gaussian(
        self,
        f_BL: torch.Tensor,
        h_BL: torch.Tensor,
        visited: list[torch.Tensor],
        *,
        sample: bool,
        sizes: list[tuple[int, int]],
    ) -> _Location:
        """The paper's locator: z = (scale, x, y) from the Gaussian posterior q(z | f, h̄); no
        inhibition of return (`visited` is unused)."""
        z = self._gaussian(torch.cat([f_BL, h_BL], dim=1), h_BL, sample=sample)
        boxes_B4 = latent_to_boxes(z.z_B3, sizes, **self._sides())
        return _Location(z.z_B3, boxes_B4, z.kl_B3.sum(dim=1), z.log_q_B3.sum(dim=1))

    def _locate_heatmap(
        self,
        f_BL: torch.Tensor,
        h_BL: torch.Tensor,
        visited: list[torch.Tensor],
        *,
        sample: bool,
        scene: _Scene,
        guide_BG: torch.Tensor | None = None,
        guide_uniform: bool = False,
    ) -> _Location:
        """A cell from the categorical posterior over the heat map, then the Gaussian's scale
        and (with `heatmap_offset`) its x, y as an offset of up to half a cell. Its KL is the
        cell's plus the Gaussian parts it uses."""
        cfg = self.config
        assert self.heatmap is not None and scene.keys_BGL is not None
        log_q_BG, log_p_BG = self.heatmap.logits(
            scene.keys_BGL,
            h_BL,
            visited if cfg.inhibit_return else [],
            scene.brightness_BG,
        )
        cell = self.heatmap.choose(
            log_q_BG,
            log_p_BG,
            scene.keys_BGL,
            sample=sample,
            straight_through=cfg.straight_through,
            centres_BG2=scene.peaks_BG2,
            guide_BG=guide_BG,
            guide_uniform=guide_uniform,
        )
        z = self._gaussian(
            torch.cat([f_BL, h_BL, cell.key_BL.detach()], dim=1), h_BL, sample=sample
        )
        kl_B = cell.kl_B + z.kl_B3[:, 0]
        centre_B2 = cell.centre_B2
        if cfg.heatmap_offset:  # up to half a cell either way (a cell is 2/grid wide)
            centre_B2 = centre_B2 + torch.tanh(z.z_B3[:, 1:]) * (1 / self.heatmap.grid)
            kl_B = kl_B + z.kl_B3[:, 1:].sum(dim=1)
        z_B3 = torch.cat([z.z_B3[:, :1], centre_B2], dim=1)
        boxes_B4 = centre_to_boxes(z_B3, scene.sizes, **self._sides())
        return _Location(z_B3, boxes_B4, kl_B, cell.log_q_B, log_q_BG)

    def loss(self, batch: Batch, objective: ObjectiveConfig) -> LossParts:
        guide_BG = None
        if objective.guide_glimpses:
            guide_BG = self._object_cells(batch.gt_boxes, "guide_glimpses")
            guide_BG = dilate_cells(guide_BG, self.heatmap.grid, objective.guide_radius)
        out = self(
            batch.proxy_BCHW,
            batch.region_reader(),
            guide_BG=guide_BG,
            guide_uniform=objective.guide_radius > 0,
        )
        assert out.recon_BTCHW is not None  # reconstruct=True by default
        target_BCHW = resize_square(batch.proxy_BCHW, self.config.proxy_size)
        locate_nll_BT = None
        if objective.locate_weight > 0:
            locate_nll_BT = self._locate_nll(out.log_q_BTG, batch.gt_boxes)
        targets_BK = (
            self.part_mask_KP[batch.labels_B]
            if self.part_head is not None
            else F.one_hot(batch.labels_B, out.glimpse_logits_BTK.shape[2]).bool()
        )
        if objective.object_targets:
            if batch.gt_boxes is None or batch.gt_classes is None:
                raise ValueError(
                    "object_targets needs object boxes and classes in the dataset (its `boxes`)"
                )
            targets_BK = object_targets(out.boxes_BT4, batch.gt_boxes, batch.gt_classes, targets_BK)
        elif objective.glimpse_counts:
            if batch.gt_boxes is None or self.part_head is not None:
                raise ValueError(
                    "glimpse_counts needs object boxes in the dataset (its `boxes`) and the "
                    "label's classes as glimpse classes (no class_parts)"
                )
            targets_BK = count_targets(out.boxes_BT4, batch.gt_boxes, targets_BK.shape[1])
        return saccader_objective(
            logits_BK=out.logits_BK,
            labels_B=batch.labels_B,
            kl_BT=out.kl_BT,
            recon_nll_BT=reconstruction_nll(out.recon_BTCHW, target_BCHW, self.config.likelihood),
            glimpse_logits_BTK=out.glimpse_logits_BTK,
            log_q_BT=out.log_q_BT,
            config=objective,
            glimpse_targets_BK=targets_BK,
            locate_nll_BT=locate_nll_BT,
        )

    def _locate_nll(
        self, log_q_BTG: torch.Tensor | None, gt_boxes: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """The supervised location term's −log q_t(a cell holding an object's centre) per glimpse
        (`location_nll`); it needs the heat map and the batch's object boxes."""
        assert log_q_BTG is not None or self.heatmap is None
        cells_BG = self._object_cells(gt_boxes, "locate_weight > 0")
        assert log_q_BTG is not None
        return location_nll(log_q_BTG, cells_BG)

    def _object_cells(self, gt_boxes: list[torch.Tensor] | None, what: str) -> torch.Tensor:
        """The heat-map cells holding an object's centre, for a term that needs them (`what`)."""
        if self.heatmap is None:
            raise ValueError(f"{what} needs model_cfg.locator=heatmap")
        if gt_boxes is None:
            raise ValueError(
                f"{what} needs object boxes in the dataset (its `boxes` column; for photos: a "
                "labels CSV with x0,y0,x1,y1)"
            )
        return self.heatmap.object_cells(gt_boxes)

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        """Deterministic in eval mode: z = the posterior mean, zero initial state; the proxy's
        reconstruction (a training term) is not decoded."""
        out = self(batch.proxy_BCHW, batch.region_reader(), sample=False, reconstruct=False)
        return Prediction(
            logits_BK=out.logits_BK, labels_B=out.logits_BK.argmax(dim=1), boxes_BT4=out.boxes_BT4
        )
