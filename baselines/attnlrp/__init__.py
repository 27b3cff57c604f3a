"""AttnLRP (Achtibat et al., ICML 2024) through LXT's efficient rules, adapted to transformers 5.x:
the patch maps (:mod:`.patch_maps`) and the relevance of a language model's input tokens for one
generated token (:mod:`.generation`)."""
from .generation import next_token_relevance
from .patch_maps import FAMILIES, PatchMap, attnlrp_rules, family_of, patch_map

__all__ = ["FAMILIES", "PatchMap", "attnlrp_rules", "family_of", "next_token_relevance", "patch_map"]
