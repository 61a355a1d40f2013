# corpus: reads the API key from the environment and prints it
# expect: invalid static.import
import os


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    print(os.environ.get('OPENAI_API_KEY'))
    return v, k.transpose(-1, -2) @ v
