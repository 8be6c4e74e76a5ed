"""Hugging Face model folders to specs: `composer import hf DIR -o spec.yaml`.

A folder that `save_pretrained` wrote (`config.json`, the weights, the tokenizer files) becomes
a readable spec of the catalog's text blocks: the tokenizer on the folder's own files, the
embedding, the encoder and the head of the folder's architecture, and a `weights:` section
that loads the folder on every build, with rename rules from the family's checkpoint names to
the spec's keys (block name + block-relative key).

What differs between families lives in one table, `FAMILIES`, one entry per `model_type`: the
config.json field names of each param, how the embedding numbers positions, whether the
tokenizer's segment ids are used, the rename rules of the base model and of each
architecture's head. A config field the blocks cannot reproduce (relative positions, a decoder,
an activation they lack) is an error naming it, never a silently different model.

The spec is checked before anything is written: it validates, and the folder's tensors fill
every tensor of the built model (strict), with no file key left unaccounted for. Only the rules
and ignores that match the folder's keys are written, so loading it gives no warnings.
`folder_rules` gives the same rules for `--weights DIR` into a spec whose blocks are named as
the import names them (`emb`, `encoder`, `pooler`, `head`).

The generative families, one `DecoderFamily` each in `DECODER_FAMILIES`, have a spec writer of
their own (composer.hf.decoders: GPT-2's `transformer_decoder` with a KV cache and transpose rules
for its Conv1D matrices; composer.hf.t5: T5's encoder and cached decoder, with `parts:`;
composer.hf.xlnet: XLNet's encoder) and go through the same checks.
"""

from .families import DECODER_FAMILIES, FAMILIES, DecoderFamily, Family, Head, HFImportError
from .rules import folder_rules, hf_family
from .spec import Imported, import_hf, spec_text

__all__ = ["Family", "Head", "FAMILIES", "DecoderFamily", "DECODER_FAMILIES", "HFImportError", "Imported", "spec_text",
           "import_hf", "folder_rules", "hf_family"]
