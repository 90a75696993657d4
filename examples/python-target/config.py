# Hyperparameters of the character model. The agent edits this file (and optim.py): every
# line is `name = value`, so the offline proposer can change one value at a time.
# The architecture sizes here decide the shapes of the saved weights; evaluate.py reads the
# shapes from the weights themselves, never from this file.

learning_rate = 0.05   # plain SGD step size
batch_size = 32        # sequences per step
context = 3            # characters the model sees before the one it predicts
n_embd = 16            # embedding width per character
n_hidden = 64          # hidden layer width
init_scale = 0.5       # multiplier on the 1/sqrt(fan_in) initialisation
weight_decay = 0.0     # L2 penalty per step
