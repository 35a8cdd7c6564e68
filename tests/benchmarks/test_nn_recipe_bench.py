"""The neural-network benchmark's figures, on its cheapest case and two shadows."""

from benchmarks import nn_recipe_bench


def test_case_figures_of_the_regularised_cnn():
    figures = nn_recipe_bench.case_figures("digits_cnn_regularised", 2, [1])
    assert figures["gap"] == round(figures["train_accuracy"] - figures["test_accuracy"], 4)
    assert figures["shadow_seconds"] > 0 and figures["pools_identical"]
    assert 0 <= figures["lira_auc"] <= 1 and 0 <= figures["rmia_auc"] <= 1
