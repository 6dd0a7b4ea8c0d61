"""Product names whose case folds in more ways than ASCII's, for the search tests."""

# Umlauts and accents, Greek capitals, "ß" and "ﬁ" (no one-letter case pair:
# full case folding would make them "ss" and "fi"), and names holding those.
CASE_FOLDING_NAMES = (
    "Ärger Ölkanne",
    "crème brûlée",
    "ΣΟΦΙΑ vase",
    "Straße mug",
    "Classic glass",
    "ﬁsh bowl",
    "First aid kit",
)
