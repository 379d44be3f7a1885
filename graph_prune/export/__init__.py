"""Export: strip a pruned model for inference, write and check what it writes.

`strip` folds the masks into the weights (`stripped_model`) and `verify`
checks the result, `report` says what it did and what it wrote, `staging`
writes outputs all or nothing and `sizes` measures them.
"""
