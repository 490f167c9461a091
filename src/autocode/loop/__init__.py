"""The closed loop: retrain on the gold standard, compare champion and challenger, promote,
and the same steps as Argo Workflows templates (docs/loop.md)."""
