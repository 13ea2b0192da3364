"""The base layer every stage imports: machine facts, device defaults and user-facing errors.

It imports nothing from the stages (data_gen, finetune, eval, benchmark); tests/test_imports.py checks that.
"""
