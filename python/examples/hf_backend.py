import attune.transformers  # registers attn_implementation="attune"
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

cfg = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=2)
model = AutoModelForCausalLM.from_config(cfg, attn_implementation="attune").eval()  # random weights
with torch.no_grad():
    tokens = model.generate(torch.tensor([[1, 2, 3, 4]]), max_new_tokens=8, do_sample=False)
print(tokens.shape, attune.transformers.calls())
