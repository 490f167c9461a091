"""Annotation campaigns: descriptions of the logged traffic for experts to code.

- `design`: the stratified sampling design (IC bands, low ICs over-sampled, probability
  proportional to frequency within a band) and its exact inclusion probabilities;
- `campaign`: the window's distinct descriptions from the compacted log, those already annotated
  set aside, the task file (``autocode annotate sample``).

The weighted estimates on the annotated rows are `autocode.evaluate`'s. See docs/autocode.md,
"Annotation campaigns".
"""
