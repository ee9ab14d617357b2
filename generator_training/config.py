"""Configuration of one generator training run (saved inside every checkpoint).

Defaults are the paper's (Ye et al., MMSys'22, Sec. 4.1.3) unless a comment says why not.
``GeneratorTrainConfig.from_dict(cfg.to_dict()) == cfg``; unknown keys are rejected so a
checkpoint from a different version fails loudly instead of silently dropping settings.

Example::

    >>> cfg = GeneratorTrainConfig(target="resnet18", aux="vgg13_bn", width=0.25, epochs=2)
    >>> GeneratorTrainConfig.from_dict(cfg.to_dict()) == cfg
    True
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

TASKS = ("classification", "face")
SSIM_MODES = ("abs", "signed")
LR_SCHEDULES = ("constant", "cosine")
FACE_TEMPLATES = ("target", "arcface")
MAX_RANK_BANK = 65536  # embeddings of 128 floats: 32 MiB at most


@dataclass
class GeneratorTrainConfig:
    # --- what is trained against ---
    task: str = "classification"  # "classification": CE terms; "face": embedding identity terms
    dataset: str = "fashion-mnist"  # classification dataset name, or "lfw" for faces
    target: str = "resnet18"  # authorized model (zoo arch or face-model name); kept accurate
    aux: str | None = None  # auxiliary model mimicking the adversary; None = no-aux baseline
    critic_width: float | None = None  # zoo width of target/aux when built untrained (tests only)

    # --- generator (U-Net) ---
    width: float = 1.0  # 1.0 = paper's 7.766 M-parameter U-Net; 0.25 = 0.49 M (CPU runs)
    depth: int = 4  # down-samplings; paper: 4
    in_channels: int = 1  # 1 for Fashion-MNIST, 3 for CIFAR-10 / faces
    image_size: int = 32  # training crop size (faces: the target recognizer's input size)
    face_template: str = "target"  # faces: "target" aligns every face on the target recognizer's
    #                                template, as the phone aligns what it protects, and the aux reads
    #                                each view re-aligned onto its own template, as evaluate's
    #                                unauthorized recognizers do (facemodels.align.realign);
    #                                "arcface": every face on the ArcFace template, critics read it
    #                                resized (what every run before this setting trained on)

    # --- loss: w_target * L_target - w_aux * L_aux + w_ssim * SSIM(x, x') ---
    w_target: float = 1.0  # paper: 1.0
    w_aux: float = 1.0  # paper: 1.0
    w_ssim: float = 0.5  # paper: 0.5
    ssim_mode: str = "abs"  # "abs": minimise |SSIM| (the paper *reports* |SSIM|; a negative
    #                         SSIM is an inverted, still recognisable image); "signed": paper's loss
    aux_ce_cap: float | None = 5.0  # per-image cap on the aux CE before negation, so -CE cannot
    #                                 run to -inf and swamp the other terms; None = paper (unbounded)
    face_aux_margin: float = 0.0  # face task: aux cosine(x, x') is pushed down to this value only
    w_target_centred: float = 0.0  # face task: + w_target_centred * (1 - cos(T(x') - mu, T(x) - mu)),
    #                                mu = running mean of the unit clean target embeddings: face-api's
    #                                descriptors of different people share cosine ~0.9, so a plain
    #                                cosine of 0.98 still lets the off-mean part, which tells people
    #                                apart, turn far (round t1: centred cosine 0.76); 0 = off (paper)
    w_target_rank: float = 0.0  # face task: + w_target_rank * CE of each protected face picking its own
    #                             clean face among the batch's by centred cosine (losses.ranking_term):
    #                             the margin the provider's gallery match needs; 0 = off (paper)
    rank_bank: int = 0  # face task, training only: the ranking term's negatives also hold the clean target
    #                     embeddings of the last rank_bank faces of earlier batches (a FIFO, with their
    #                     identities, so the own person is never a negative): a batch of 16 holds 15 other
    #                     people, the provider's gallery many more, and a face that drifts towards one of
    #                     them loses its match; 0 = the batch's own faces only
    aux_rescale: float = 0.0  # training only: aux sees x' first down-scaled by a random factor in
    #                           [1 - aux_rescale, 1] and back (input diversity, Xie et al. CVPR'19),
    #                           so what fools it must survive resampling; 0 = off (paper)
    # --- human-readability witness (photoveil.readability; faces, 3 channels; 0 = off, paper) ---
    w_readable: float = 0.0  # + w_readable * (|SSIM| + |edge corr.|) of the witness-normalised pair
    #                          (standardised, median, gray, half size): hides the face from eyes,
    #                          not only from the plain SSIM a colour cast already fools
    w_readable_far: float = 0.0  # + w_readable_far * the same term on the far view (quarter size,
    #                              readability.FAR): without it a stripe pattern hides the face at
    #                              half size only
    w_readable_blur: float = 0.0  # + w_readable_blur * the same term on the out-of-focus view
    #                               (readability.BLURRED): without it a fine dither over a dimmed
    #                               face fools both down-scaled views while a squint reads the face
    w_readable_aux: float = 0.0  # + w_readable_aux * relu(cos(A(N(x')), A(x)) - margin): the aux
    #                              recognizer run on the normalised protected image must not match
    w_readable_aux_blur: float = 0.0  # + the same aux term on the out-of-focus view (readability.BLURRED):
    #                                   without it the aux still names 0.18-0.27 of faces out of focus
    w_readable_aux_gap: float = 0.0  # + w * relu(cos A(V(x'_i), x_i) - mean over the batch's other people
    #                                  of cos A(V(x'_i), x_j)) in the median and out-of-focus views V
    #                                  (losses.gap_term): the aux must not find the face in a gallery,
    #                                  where the two terms above only lower the cosine itself
    w_link: float = 0.0  # face task: + w * relu(p_i - s_i), p_i the share of i's softmax over the aux's
    #                      cosines to the batch's other protected faces that falls on its own person's
    #                      other photos, s_i their share by count (losses.link_term): the aux must
    #                      not link one person's protected uploads to each other (the linkage attacker
    #                      of evaluation/attacks/linkage.py: mobileface named 0.22-0.27 of round h2's
    #                      uploads from one labelled upload per person); > 0 builds every training batch
    #                      from batch_size / 2 people x 2 photos (datamodule.PairBatchSampler); 0 = off
    init_from: str | None = None  # start from this generator checkpoint (shipped name or path; same
    #                               width/depth) instead of random weights: fine-tuning

    # --- optimisation (paper: AdamW lr 5e-3, wd 5e-4, batch 256, 100 epochs, 16-bit) ---
    lr: float = 5e-3
    lr_schedule: str = "constant"  # paper: constant. "cosine": 5 % linear warm-up, then cosine
    #                                decay to 0 per step, for short (CPU) runs
    weight_decay: float = 5e-4
    batch_size: int = 256
    epochs: int = 100
    precision: str = "auto"  # "auto": bf16-mixed / 16-mixed on GPU, 32 on CPU
    augment: bool = True  # random crop shift (crop_pad) + horizontal flip on training batches
    crop_pad: int = 0  # crop shift in pixels. Match what the critics were trained with: the
    #                    shipped zoo saw no shift, and a 4-px shift (the paper's CIFAR setting)
    #                    costs them 7-36 accuracy points, so the generator would learn to fool
    #                    aux on images the test never shows

    # --- data ---
    subset: int | None = None  # train on a seeded random subset of N training images
    val_size: int = 5000  # paper: first half of the test split validates, second half tests
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        check(self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}")
        check(self.face_template in FACE_TEMPLATES,
              f"face_template must be one of {FACE_TEMPLATES}, got {self.face_template!r}")
        check(self.ssim_mode in SSIM_MODES, f"ssim_mode must be one of {SSIM_MODES}, got {self.ssim_mode!r}")
        check(0 < self.width <= 8, f"width must be in (0, 8], got {self.width}")
        check(1 <= self.depth <= 6, f"depth must be in [1, 6], got {self.depth}")
        check(self.in_channels in (1, 3), f"in_channels must be 1 or 3, got {self.in_channels}")
        check(self.image_size >= 11, f"image_size must be >= 11 (SSIM window), got {self.image_size}")
        for name in ("w_target", "w_aux", "w_ssim", "weight_decay", "face_aux_margin", "w_target_centred",
                     "w_target_rank", "w_readable", "w_readable_far", "w_readable_blur", "w_readable_aux",
                     "w_readable_aux_blur", "w_readable_aux_gap", "w_link"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        # 0.95: the evaluation's rescale transform, which applies it, shrinks to >= 5 %
        check(0 <= self.aux_rescale <= 0.95, f"aux_rescale must be in [0, 0.95], got {self.aux_rescale}")
        check(self.face_aux_margin < 1, f"face_aux_margin must be in [0, 1), got {self.face_aux_margin}")
        for name in ("w_target_centred", "w_target_rank"):
            check(getattr(self, name) == 0 or self.task == "face",
                  f"{name} needs the face task (embeddings), got task {self.task!r}")
        check(0 <= self.rank_bank <= MAX_RANK_BANK, f"rank_bank must be in [0, {MAX_RANK_BANK}], got {self.rank_bank}")
        check(self.rank_bank == 0 or self.w_target_rank > 0,
              f"rank_bank needs the ranking term (w_target_rank > 0), got w_target_rank {self.w_target_rank}")
        check(self.aux_ce_cap is None or self.aux_ce_cap > 0, f"aux_ce_cap must be > 0 or None, got {self.aux_ce_cap}")
        check(self.lr_schedule in LR_SCHEDULES,
              f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        check(0 < self.lr <= 1, f"lr must be in (0, 1], got {self.lr}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.subset is None or self.subset >= 1, f"subset must be >= 1 or None, got {self.subset}")
        check(self.val_size >= 1, f"val_size must be >= 1, got {self.val_size}")
        check(0 <= self.crop_pad <= 16, f"crop_pad must be in [0, 16], got {self.crop_pad}")
        check(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        check(self.precision in ("auto", "32", "32-true", "16-mixed", "bf16-mixed"),
              f"precision must be auto, 32, 16-mixed or bf16-mixed, got {self.precision!r}")
        check(self.aux != self.target, f"aux must differ from target ({self.target!r})")
        check(self.w_readable == self.w_readable_far == self.w_readable_blur == self.w_readable_aux
              == self.w_readable_aux_blur == self.w_readable_aux_gap == 0 or self.in_channels == 3,
              "w_readable / w_readable_far / w_readable_blur / w_readable_aux / w_readable_aux_blur / "
              "w_readable_aux_gap need RGB images (in_channels 3)")
        check(self.w_readable_far == 0 or self.image_size >= 44,
              f"w_readable_far needs image_size >= 44 (SSIM window at quarter size), got {self.image_size}")
        for name in ("w_readable_aux", "w_readable_aux_blur", "w_readable_aux_gap", "w_link"):
            check(getattr(self, name) == 0 or (self.aux is not None and self.task == "face"),
                  f"{name} needs task 'face' and an aux recognizer")
        check(self.w_link == 0 or (self.batch_size >= 4 and self.batch_size % 2 == 0),
              f"w_link needs an even batch_size >= 4 (people x 2 photos), got {self.batch_size}")
        check(self.w_readable == 0 or self.image_size >= 22,
              f"w_readable needs image_size >= 22 (SSIM window at half size), got {self.image_size}")
        check(self.w_readable_blur == 0 or self.image_size >= 22,
              f"w_readable_blur needs image_size >= 22 (SSIM window at half size), got {self.image_size}")
        for name in ("w_readable_aux_blur", "w_readable_aux_gap"):
            check(getattr(self, name) == 0 or self.image_size >= 22,
                  f"{name} needs image_size >= 22 (out-of-focus view), got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GeneratorTrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown generator config keys {sorted(unknown)}; known: {sorted(known)}")
        # configs saved before face_template existed trained on ArcFace-template crops
        return cls(**{"face_template": "arcface", **values})

    @property
    def run_name(self) -> str:
        return f"{self.target}__{self.aux or 'noaux'}"
