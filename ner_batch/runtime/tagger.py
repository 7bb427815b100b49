"""The torch-free tagger: a bundle's ONNX graph on ONNX Runtime, behind the one tagging path.

Per word it gives a label and a confidence: for the CRF, the marginal probability of the
chosen label (forward-backward); for softmax, the chosen label's probability. An entity's
score is the mean of its words' confidences. See :mod:`ner_batch.tagging` for how sentences
are windowed, batched, stitched and decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..batching import BatchSettings
from ..cpu import cpu_info
from ..decode import Decoder
from ..encoding import Windower
from ..tagging import SentenceTagger, SentenceTags
from .bundle import Bundle, BundleError
from .session import EmissionModel


class Tagger(SentenceTagger):
    """:class:`~ner_batch.tagging.SentenceTagger` whose emissions come from a bundle's variant."""

    def __init__(
        self,
        bundle: Bundle | str | Path,
        variant: str = "fp32",
        device: str = "auto",
        threads: int = 0,
        *,
        batching: BatchSettings | None = None,
        device_id: int = 0,
        say: Callable[[str], None] | None = None,
    ):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.variant = variant
        self.model = EmissionModel(self.bundle.model_path(variant), device, threads, say=say, device_id=device_id)
        labels = self.bundle.labels
        dim = self.model.session.get_outputs()[0].shape[-1]
        if isinstance(dim, int) and dim != len(labels):
            raise BundleError(f"{self.bundle.path}: expected the graph to emit {len(labels)} labels (labels.json), got {dim}")
        windower = Windower.from_dir(self.bundle.path, self.bundle.max_length, shape_markers=self.bundle.shape_markers)
        super().__init__(windower, lambda batch: self.model(batch.inputs()), Decoder(labels, self.bundle.crf), batching)
        if variant.startswith("int8") and say is not None:
            note = cpu_mismatch(self.bundle, variant)
            if note:
                say(note)

    def tag_words(self, sentences: Sequence[Sequence[str]], neighbours: int = 0) -> list[SentenceTags]:
        """Labels and confidences for pre-split sentences (with ``neighbours``, read as
        consecutive text: see :meth:`~ner_batch.encoding.Windower.windows`)."""
        return self.tag(sentences, neighbours=neighbours)


def cpu_mismatch(bundle: Bundle, variant: str) -> str:
    """One line when ``variant``'s F1 in the manifest was measured on another class of CPU than
    this one (int8 accuracy and speed depend on it), else ``""``."""
    entry = bundle.manifest.get("variants", {}).get(variant, {}).get("f1") or {}
    measured, here = (entry.get("cpu") or {}).get("class"), cpu_info()
    if "f1" not in entry or measured == here["class"]:
        return ""
    where = f"a {measured} CPU ({entry['cpu'].get('model')})" if measured else "a CPU the manifest does not name"
    return (f"{variant}: the bundle's test F1 {entry['f1'] * 100:.2f} was measured on {where}; this machine is "
            f"{here['class']} ({here['model']}), where int8 results may differ: "
            f"`ner-batch evaluate --bundle {bundle.path} --variant {variant}` measures them here")
