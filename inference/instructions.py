"""The fixed words turnlog's prompts say to the model.

The prompt builder writes them; the scripted engine, which plays a model that follows them,
recognises them. One definition keeps the two in step.
"""

GROUNDED_INSTRUCTIONS = (
    "Answer from the numbered passages below, taken from the user's documents. After each statement "
    "that uses a passage, cite it with its number in square brackets, like [1]. If the passages do not "
    "contain the answer, say that the documents do not cover it; do not make up an answer."
)
NOTHING_FOUND_INSTRUCTIONS = (
    "The user's documents were searched for this question and nothing relevant was found. Say that "
    "the documents do not cover it, and do not make up an answer from them."
)

SUMMARY_HEADER = "Facts from earlier in this conversation:"
