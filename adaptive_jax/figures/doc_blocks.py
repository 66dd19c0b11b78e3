"""Marked blocks of a Markdown file, rewritten from a committed results file.

A block is `<!-- prefix:name -->`, its body, `<!-- /prefix:name -->`; `replace_blocks` swaps
the bodies and leaves everything else as it was, so a test can check that committed docs
equal what their results render.
"""

import re


def replace_blocks(text: str, blocks: dict, *, prefix: str) -> str:
  """`text` with each `<!-- prefix:name -->` ... `<!-- /prefix:name -->` block's body replaced."""
  for name, body in blocks.items():
    pattern = re.compile(rf"(<!-- {prefix}:{name} -->\n)(?:.*?\n)?(<!-- /{prefix}:{name} -->)",
                         re.S)
    text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
  return text
