"""Small toy-world sizes the toy tests share."""

SMALL = dict(
    num_sft=60,
    num_sft_validation=20,
    num_pairs=300,
    num_heldout_pairs=50,
    num_rl_prompts=40,
    num_eval_prompts=30,
    num_rating_corpus=80,
    num_alignment=1000,
)
