"""Prediction and label events: the CloudEvents codec, the logger inference code calls, the label joiner,
and the columns a batch of them becomes."""
