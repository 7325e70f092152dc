from tasks.tracking.leaderboard import applicable_params, shown_params, shown_value


def test_the_leaderboard_shows_only_the_parameters_that_apply() -> None:
    full = {"train.method": "full", "train.learning_rate": "7.906468268113813e-05", "train.lora_r": "16"}
    assert applicable_params(full) == {"train.method": "full", "train.learning_rate": "7.906468268113813e-05"}
    lora = {**full, "train.method": "lora"}
    assert applicable_params(lora)["train.lora_r"] == "16"


def test_numbers_are_rounded_for_people() -> None:
    assert shown_value("7.906468268113813e-05") == "7.91e-05"
    assert shown_value("0.012345678") == "0.0123" and shown_value("3") == "3" and shown_value("full") == "full"
    assert shown_value("None") == "None"
    assert (
        shown_params({"train.method": "full", "train.weight_decay": "0.0312345"}) == "method=full weight_decay=0.0312"
    )
