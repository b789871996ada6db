"""What a dataset does with an image file it cannot read: stop at it, or skip it and say so.

A photo folder of any size holds a few files no reader can use: truncated by a failed copy, empty,
a text file or a PostScript file named .jpg, a format ptflow does not read (.tif), a picture with
more pixels than allowed (image_files.py tells these apart). `--bad_images` chooses:

- fail (the default): the first one stops training with one line naming the file and why, before a
  run folder exists. A broken file is then fixed or removed by the user, knowingly.
- skip: the file is left out and recorded (file, problem, reason). The run folder lists them in
  bad_images.jsonl, run.json counts them (`bad_images`), `ptflow runs` shows the count, and the
  data fingerprint includes them (splits.py), so `--resume` continues only on the same files.
  Past a ceiling, `--max_bad_fraction` of the dataset's image files, the run stops with one line
  saying how many of how many: that many broken files is a problem with the folder (a failed
  download, the wrong folder), not bad luck, and training on the rest would hide it.

Pure standard library at import: config.py reads POLICIES for the --help text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pathlib stays off `ptflow --help`'s imports (config reads POLICIES)
    from pathlib import Path

from ptflow.errors import PtflowError

POLICIES = ("fail", "skip")
FILE = "bad_images.jsonl"  # in the run folder: one skipped file per line


@dataclass
class BadImages:
    """The policy for one dataset's unreadable files, and the files it skipped so far."""

    policy: str  # POLICIES
    max_fraction: float  # the ceiling with skip, a share of total
    total: int = 0  # the dataset's image files, good and bad: the ceiling is a share of them
    skipped: list[dict] = field(default_factory=list)  # {"file", "problem", "reason"}, in the order met

    @classmethod
    def of_run(cls, config: dict) -> "BadImages":
        """The policy a trained model's config names (its file is input: anything but skip with a
        number for the ceiling stops at the first file, as a model from before --bad_images did)."""
        fraction = config.get("max_bad_fraction")
        if config.get("bad_images") == "skip" and isinstance(fraction, (int, float)) and not isinstance(fraction, bool):
            return cls("skip", float(fraction))
        return cls("fail", 0.0)

    def read(self, file: Path):
        """The decoded image (image_files.read_image), or None when it cannot be read and is skipped."""
        from ptflow.data.image_files import read_image

        try:
            return read_image(file, str(file))
        except PtflowError as exc:  # ImageRefused, ImageTooLarge, ImageDamaged: all name the file
            self.refuse(file, exc)
            return None

    def refuse(self, file: Path, error: PtflowError) -> None:
        """Stop with error (fail), or record file as skipped; stop past the ceiling either way."""
        if self.policy != "skip":
            raise error
        reason = str(error).removeprefix(f"{file}: ")
        self.skipped.append({"file": str(file), "problem": getattr(error, "problem", "unreadable"), "reason": reason})
        if len(self.skipped) > self.max_fraction * self.total:
            raise PtflowError(f"at least {len(self.skipped)} of the {self.total} image files cannot be read, more "
                              f"than --max_bad_fraction {self.max_fraction:g} allows; the last: {error}")
