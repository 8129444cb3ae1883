"""Estimators: any scikit-learn-compatible estimator; the grid's values are set on it."""

from sklearn.neighbors import KNeighborsClassifier


def knn() -> KNeighborsClassifier:
    """K nearest neighbours; `grid: {n_neighbors: [...]}` in the settings sweeps k."""
    return KNeighborsClassifier()
