"""Queries and writes on the store, one module per resource; every function takes the session and keyword-only
arguments. Callers use the names re-exported here (`crud.list_features`), not the modules."""

from .accounts import add_api_token, create_user, find_user, user_for_token
from .base import Conflict, NotFound
from .bookmarks import add_bookmark, bookmark_lists, create_bookmark_list, find_bookmark_list, remove_bookmark
from .features import (
    ExampleView,
    FeaturePage,
    FeatureRow,
    SaeHeader,
    SortKey,
    StateFilter,
    feature_page,
    find_feature,
    list_features,
    token_texts,
)
from .labels import (
    LabelConflict,
    add_label,
    all_labels,
    current_labels,
    import_labels,
    label_history,
    label_texts,
    labelled_count,
    next_unlabelled,
    revise_label,
)
from .saes import create_sae, find_sae, list_saes
from .steering import find_steering, save_steering, steering_experiments
from .tags import feature_tags, list_tags, tag_feature, untag_feature

__all__ = [
    "Conflict", "ExampleView", "FeaturePage", "FeatureRow", "LabelConflict", "NotFound", "SaeHeader", "SortKey",
    "StateFilter", "add_api_token", "add_bookmark", "add_label", "all_labels", "bookmark_lists",
    "create_bookmark_list", "create_sae", "create_user", "current_labels", "feature_page", "feature_tags",
    "find_bookmark_list", "find_feature", "find_sae", "find_steering", "find_user", "import_labels",
    "label_history", "label_texts", "labelled_count", "list_features", "list_saes", "list_tags",
    "next_unlabelled", "remove_bookmark", "revise_label", "save_steering", "steering_experiments",
    "tag_feature", "token_texts", "untag_feature", "user_for_token",
]
