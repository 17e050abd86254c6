"""Queries and writes on the store, one module per resource; every function takes the session and keyword-only
arguments. Callers use the names re-exported here (`crud.list_features`), not the modules."""

from .accounts import (
    TokenRefused,
    add_api_token,
    api_tokens,
    clear_login_failures,
    create_user,
    end_session,
    find_user,
    get_user,
    login_wait,
    record_login_failure,
    revoke_api_token,
    session_user,
    set_password,
    set_role,
    start_session,
    user_for_token,
)
from .attribution import feature_blurbs, find_graph, list_graphs, save_graph, set_saes
from .base import Conflict, NotFound
from .bookmarks import add_bookmark, bookmark_lists, create_bookmark_list, find_bookmark_list, remove_bookmark
from .briefs import FeatureBrief, briefs_of_pairs, dense_features, feature_briefs
from .directions import directions_by_id, save_direction, steering_directions
from .features import (
    KEYSET_SORTS,
    Cursor,
    ExampleView,
    FeaturePage,
    FeatureRow,
    SaeHeader,
    SortKey,
    StateFilter,
    cursor_of,
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
from .maps import (
    MapPointRow,
    MemberRow,
    add_cluster_label,
    bookmark_features,
    cluster_label_history,
    cluster_label_texts,
    cluster_members,
    coactive_partners,
    dead_mask,
    find_cluster,
    find_map,
    map_clusters,
    map_point,
    map_points,
    next_unlabelled_in_cluster,
    tag_features,
    top_tokens,
)
from .sae_sets import SaeGroup, add_to_set, create_sae_set, find_sae_set, saes_by_set, set_members, set_to_join
from .saes import create_sae, find_sae, list_saes
from .steering import find_steering, save_steering, steering_experiments
from .tags import feature_tags, list_tags, tag_feature, untag_feature
from .text_search import index_top_texts

__all__ = [
    "Conflict", "ExampleView", "FeatureBrief", "FeaturePage", "FeatureRow", "LabelConflict", "NotFound", "SaeGroup",
    "SaeHeader", "SortKey", "StateFilter", "TokenRefused", "add_api_token", "add_bookmark", "add_label",
    "add_to_set", "all_labels", "api_tokens", "bookmark_lists", "briefs_of_pairs", "clear_login_failures",
    "create_bookmark_list", "create_sae", "create_sae_set", "create_user", "current_labels", "dense_features",
    "directions_by_id", "end_session", "feature_briefs", "feature_page", "feature_tags", "find_bookmark_list",
    "find_feature", "find_sae", "find_sae_set", "find_steering", "find_user", "get_user", "import_labels",
    "label_history", "label_texts", "labelled_count", "list_features", "list_saes", "list_tags", "login_wait",
    "next_unlabelled", "record_login_failure", "remove_bookmark", "revise_label", "revoke_api_token", "saes_by_set",
    "save_direction", "save_steering", "session_user", "set_members", "set_password", "set_role", "set_to_join",
    "start_session", "steering_directions", "steering_experiments", "tag_feature", "token_texts", "untag_feature",
    "user_for_token",
]
__all__ += [  # issue 16: the feature map
    "MapPointRow",
    "MemberRow",
    "add_cluster_label",
    "bookmark_features",
    "cluster_label_history",
    "cluster_label_texts",
    "cluster_members",
    "coactive_partners",
    "dead_mask",
    "find_cluster",
    "find_map",
    "map_clusters",
    "map_point",
    "map_points",
    "next_unlabelled_in_cluster",
    "tag_features",
    "top_tokens",
]
__all__ += ["KEYSET_SORTS", "Cursor", "cursor_of", "index_top_texts"]  # issue 22: the feature list by key
__all__ += ["feature_blurbs", "find_graph", "list_graphs", "save_graph", "set_saes"]  # issue 15: attribution
