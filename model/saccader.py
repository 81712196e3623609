"""The variational saccader (Ramapuram et al., "Variational Saccading", BMVC 2019; MODEL.md).

Per glimpse t: locate (posterior q(z_t | x̃, h_{t−1}) and learned prior p(z_t | h_{t−1}) over
z = (scale, x, y); with `locator="heatmap"` the centre (x, y) is instead a cell of a grid over the
proxy, drawn from a categorical posterior scored by a conv net on the proxy, see `HeatmapLocator`)
→ glimpse (the box of z_t read from the original through a region reader) →
classify (a_t from [h̄_{t−1}, g_t]); the LSTM core then steps on [f, φ_z(z_t)] (+ g_t when
`feed_glimpse`). The logits come from the mean of the a_t; a proxy decoder on [φ_z(z_t), h̄_{t−1}]
reconstructs the proxy (the VAE half).

Shape legend: B batch, T glimpses, K classes, L latent width, S LSTM layers, C channels,
H height, W width (proxy side P), N glimpse window side, 3 = z = (scale, x, y),
4 = a normalised box (y0, x0, y1, x1), G = grid cells of the heat-map locator.
"""

from __future__ import annotations

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
    gaussian_kl,
    reconstruction_nll,
    saccader_objective,
)

LSTM_LAYERS = 2


@dataclass
class SaccaderOutput:
    """Everything one forward pass produces; the loss and the evaluation pick what they need."""

    logits_BK: torch.Tensor  # from the mean of the per-glimpse features a_t
    # the same head on each a_t alone (auxiliary loss), or the part head (config.part_classes)
    glimpse_logits_BTK: torch.Tensor
    boxes_BT4: torch.Tensor  # where each glimpse looked
    z_BT3: torch.Tensor  # the latents used (samples in training, posterior means at inference)
    kl_BT3: torch.Tensor  # KL(q_t ‖ p_t) per coordinate (heatmap: the cell's KL under x, 0 under y)
    log_q_BT: torch.Tensor  # log q(z_t) of the location used, for the score-function term
    recon_BTCHW: torch.Tensor  # proxy reconstruction (Bernoulli logits or Gaussian means)


@dataclass
class _Location:
    """One step of `locate`: the latent used, its KL to the prior and the location's log q."""

    z_B3: torch.Tensor
    kl_B3: torch.Tensor
    log_q_B: torch.Tensor


class HeatmapLocator(nn.Module):
    """q(cell | x̃, h̄) and p(cell | h̄) over a G×G grid of proxy cells.

    A small conv net on the proxy gives one L-vector (a key) per cell; a query from h̄ scores them
    by a dot product. The keys are translation-equivariant, so "a bright blob here" is learnt once
    for every position instead of position by position, which the pooled-vector MLP posterior
    must do (MODEL.md, "Known difficulties"). Two coordinate channels let the query also prefer
    places. Cell centres in [−1, 1] become the glimpse centres.
    """

    def __init__(self, proxy_channels: int, latent: int, width: int, proxy_size: int, stride: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(proxy_channels + 2, width, 3, padding=1), nn.ELU()]
        for _ in range(int(math.log2(stride))):
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ELU()]
        layers.append(nn.Conv2d(width, latent, 1))
        self.keys = nn.Sequential(*layers)
        self.query = nn.Linear(latent, latent)
        self.grid = math.ceil(proxy_size / stride)
        self.prior = nn.Linear(latent, self.grid**2)  # p(cell | h̄): no proxy, as the paper's prior
        centres_G = (torch.arange(self.grid, dtype=torch.float32) + 0.5) / self.grid * 2 - 1
        cy_GG, cx_GG = torch.meshgrid(centres_G, centres_G, indexing="ij")
        self.register_buffer("centres_G2", torch.stack([cx_GG, cy_GG], -1).view(-1, 2), False)

    def keys_of(self, proxy_BCPP: torch.Tensor) -> torch.Tensor:
        """B×G×L keys, computed once per image."""
        B, _, P, _ = proxy_BCPP.shape
        ramp_P = torch.linspace(-1, 1, P, device=proxy_BCPP.device, dtype=proxy_BCPP.dtype)
        coords_B2PP = torch.stack(torch.meshgrid(ramp_P, ramp_P, indexing="ij")).expand(B, 2, P, P)
        keys_BLgg = self.keys(torch.cat([proxy_BCPP, coords_B2PP], dim=1))
        return keys_BLgg.flatten(2).transpose(1, 2)

    def logits(
        self, keys_BGL: torch.Tensor, h_BL: torch.Tensor, visited_B4s: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior and prior log-probabilities over cells (B×G each); cells whose centre lies
        in an earlier box (`visited_B4s`, normalised boxes) are masked out of the posterior."""
        scores_BG = torch.einsum("bgl,bl->bg", keys_BGL, self.query(h_BL)) / math.sqrt(
            keys_BGL.shape[2]
        )
        cx_G, cy_G = ((self.centres_G2[:, i] + 1) / 2 for i in range(2))
        for boxes_B4 in visited_B4s:
            y0, x0, y1, x1 = (boxes_B4[:, i : i + 1].detach() for i in range(4))
            inside_BG = (y0 <= cy_G) & (cy_G < y1) & (x0 <= cx_G) & (cx_G < x1)
            all_masked_B1 = inside_BG.all(dim=1, keepdim=True)
            scores_BG = scores_BG.masked_fill(inside_BG & ~all_masked_B1, -1e4)
        return F.log_softmax(scores_BG, dim=1), F.log_softmax(self.prior(h_BL), dim=1)


class Saccader(BatchClassifier):
    """Variational saccader: T glimpses of W×W pixels chosen from the proxy, then a class.

    Train through `loss` with an `ObjectiveConfig` (`product` by default, as measured in
    model/loss.py); `predict` is deterministic in eval mode and returns the boxes.
    """

    def __init__(self, config: SaccaderConfig) -> None:
        super().__init__()
        self.config = config
        L, P, C_proxy = config.latent, config.proxy_size, config.proxy_channels
        encoder = {"width": config.encoder_width, "blocks": list(config.encoder_blocks)}
        self.proxy_encoder = SmallResNet(C_proxy, L, **encoder)  # φ_x
        self.glimpse_encoder = SmallResNet(config.in_channels, L, **encoder)
        core_in = 3 * L if config.feed_glimpse else 2 * L
        self.core = nn.LSTM(core_in, L, num_layers=LSTM_LAYERS, batch_first=True)
        self.posterior = mlp(2 * L, L, 6)  # [f, h̄] → (μ, log σ²)
        self.prior = mlp(L, L, 6)  # h̄ → (μ_p, log σ_p²)
        self.phi_z = mlp(3, L, L)
        self.decoder = mlp(2 * L, L, C_proxy * P * P)  # [φ_z(z), h̄] → x̃
        self.glimpse_head = mlp(2 * L, L, L)  # [h̄, g] → a_t
        self.classifier = mlp(L, L, config.num_classes)
        self.part_head: nn.Module | None = None
        if config.part_classes:
            n_parts = 1 + max(max(p) for p in config.part_classes)
            self.part_head = mlp(L, L, n_parts)
            mask_KP = torch.zeros(config.num_classes, n_parts, dtype=torch.bool)
            for k, parts in enumerate(config.part_classes):
                mask_KP[k, list(parts)] = True
            self.register_buffer("part_mask_KP", mask_KP, persistent=False)
        self.heatmap = (
            HeatmapLocator(C_proxy, L, config.encoder_width, P, config.heatmap_stride)
            if config.locator == "heatmap"
            else None
        )
        with torch.no_grad():
            # q(z) starts narrow and input-independent in its variance: early training glimpses
            # are then near the mean, not random crops (MODEL.md, "Known difficulties").
            logvar_layer = self.posterior[-1]
            logvar_layer.weight[3:].zero_()
            logvar_layer.bias[3:].fill_(config.posterior_logvar_init)

    def forward(
        self, proxy_BCHW: torch.Tensor, reader: RegionReader, *, sample: bool | None = None
    ) -> SaccaderOutput:
        """T glimpses and the class scores. `sample`: draw z from q (default: in training)."""
        sample = self.training if sample is None else sample
        cfg = self.config
        f_BL = self.proxy_encoder(resize_square(proxy_BCHW, cfg.proxy_size))
        state = self._initial_state(f_BL)
        sizes = reader.image_sizes()
        keys_BGL = None
        if self.heatmap is not None:
            keys_BGL = self.heatmap.keys_of(resize_square(proxy_BCHW, cfg.proxy_size))
        to_boxes = centre_to_boxes if self.heatmap is not None else latent_to_boxes
        a, boxes, z, kl, log_q, recon = [], [], [], [], [], []
        for _ in range(cfg.glimpses):
            h_BL = state[0].mean(dim=0)  # h̄_{t−1}: mean over the LSTM layers
            # locate
            where = self._locate(f_BL, h_BL, sample=sample)
            if keys_BGL is not None:
                where = self._locate_cell(where, keys_BGL, h_BL, boxes, sample=sample)
            boxes_B4 = to_boxes(
                where.z_B3,
                sizes,
                min_fraction=cfg.min_image_fraction,
                max_fraction=cfg.max_image_fraction,
            )
            # glimpse
            g_BL = self.glimpse_encoder(
                read_glimpses(reader, boxes_B4, cfg.window, level=cfg.pooled_level)
            )
            # classify (this glimpse's share), reconstruct the proxy, step the core
            a.append(self.glimpse_head(torch.cat([h_BL, g_BL], dim=1)))
            e_BL = self.phi_z(where.z_B3)
            recon.append(self.decoder(torch.cat([e_BL, h_BL], dim=1)))
            core_in = [f_BL, e_BL, g_BL] if cfg.feed_glimpse else [f_BL, e_BL]
            _, state = self.core(torch.cat(core_in, dim=1).unsqueeze(1), state)
            boxes.append(boxes_B4)
            z.append(where.z_B3)
            kl.append(where.kl_B3)
            log_q.append(where.log_q_B)
        a_BTL = torch.stack(a, dim=1)
        B = proxy_BCHW.shape[0]
        return SaccaderOutput(
            logits_BK=self.classifier(a_BTL.mean(dim=1)),
            glimpse_logits_BTK=(self.part_head if self.part_head is not None else self.classifier)(
                a_BTL
            ),
            boxes_BT4=torch.stack(boxes, dim=1),
            z_BT3=torch.stack(z, dim=1),
            kl_BT3=torch.stack(kl, dim=1),
            log_q_BT=torch.stack(log_q, dim=1),
            recon_BTCHW=torch.stack(recon, dim=1).view(
                B, cfg.glimpses, cfg.proxy_channels, cfg.proxy_size, cfg.proxy_size
            ),
        )

    def _initial_state(self, f_BL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LSTM (h, c), each S×B×L: zeros, plus N(0, σ²) noise in training (the reference's)."""
        h_SBL = f_BL.new_zeros(LSTM_LAYERS, f_BL.shape[0], self.config.latent)
        c_SBL = torch.zeros_like(h_SBL)
        if self.training and self.config.init_noise > 0:
            h_SBL = h_SBL + self.config.init_noise * torch.randn_like(h_SBL)
            c_SBL = c_SBL + self.config.init_noise * torch.randn_like(c_SBL)
        return h_SBL, c_SBL

    def _locate(self, f_BL: torch.Tensor, h_BL: torch.Tensor, *, sample: bool) -> _Location:
        """z_t from q(z_t | x̃, h_{t−1}) (a reparameterised sample, or its mean) and its KL."""
        mu_B3, logvar_B3 = self.posterior(torch.cat([f_BL, h_BL], dim=1)).chunk(2, dim=1)
        prior_mu_B3, prior_logvar_B3 = self.prior(h_BL).chunk(2, dim=1)
        z_B3 = mu_B3
        if sample:
            z_B3 = mu_B3 + torch.randn_like(mu_B3) * (0.5 * logvar_B3).exp()
        kl_B3 = gaussian_kl(mu_B3, logvar_B3, prior_mu_B3, prior_logvar_B3)
        # log N(z; μ, σ²) of the sample held fixed: its gradient is the score function.
        eps_B3 = (z_B3.detach() - mu_B3) * (-0.5 * logvar_B3).exp()
        log_q_B = (-0.5 * (eps_B3**2 + logvar_B3 + math.log(2 * math.pi))).sum(dim=1)
        return _Location(z_B3=z_B3, kl_B3=kl_B3, log_q_B=log_q_B)

    def _locate_cell(
        self,
        where: _Location,
        keys_BGL: torch.Tensor,
        h_BL: torch.Tensor,
        visited: list[torch.Tensor],
        *,
        sample: bool,
    ) -> _Location:
        """Replace the Gaussian centre by a grid cell: drawn from q(cell) in training, its mode at
        inference. The scale keeps its Gaussian (and its pathwise gradient)."""
        assert self.heatmap is not None
        inhibit = visited if self.config.inhibit_return else []
        log_q_BG, log_p_BG = self.heatmap.logits(keys_BGL, h_BL, inhibit)
        if sample:
            cell_B = torch.distributions.Categorical(logits=log_q_BG).sample()
        else:
            cell_B = log_q_BG.argmax(dim=1)
        centre_B2 = self.heatmap.centres_G2[cell_B]
        z_B3 = torch.cat([where.z_B3[:, :1], centre_B2], dim=1)
        cell_kl_B = (log_q_BG.exp() * (log_q_BG - log_p_BG)).sum(dim=1)
        kl_B3 = torch.stack([where.kl_B3[:, 0], cell_kl_B, torch.zeros_like(cell_kl_B)], dim=1)
        log_q_B = log_q_BG.gather(1, cell_B[:, None]).squeeze(1)
        return _Location(z_B3=z_B3, kl_B3=kl_B3, log_q_B=log_q_B)

    def loss(self, batch: Batch, objective: ObjectiveConfig) -> LossParts:
        out = self(batch.proxy_BCHW, batch.region_reader())
        target_BCHW = resize_square(batch.proxy_BCHW, self.config.proxy_size)
        return saccader_objective(
            logits_BK=out.logits_BK,
            labels_B=batch.labels_B,
            kl_BT3=out.kl_BT3,
            recon_nll_BT=reconstruction_nll(out.recon_BTCHW, target_BCHW, self.config.likelihood),
            glimpse_logits_BTK=out.glimpse_logits_BTK,
            log_q_BT=out.log_q_BT,
            config=objective,
            glimpse_targets_BK=(
                self.part_mask_KP[batch.labels_B] if self.part_head is not None else None
            ),
        )

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        """Deterministic in eval mode: z = the posterior mean, zero initial state."""
        out = self(batch.proxy_BCHW, batch.region_reader(), sample=False)
        return Prediction(
            logits_BK=out.logits_BK, labels_B=out.logits_BK.argmax(dim=1), boxes_BT4=out.boxes_BT4
        )
