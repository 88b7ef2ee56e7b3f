"""Raw media to shards: read and decode clips, detect and track faces, find speech, compute voice
features, and write the per-clip face and voice shards the training and evaluation stages read."""
