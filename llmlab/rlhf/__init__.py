"""Reinforcement learning from human feedback (lab m13): PPO's mathematics (``ppo``), learning from
preference pairs (``preference``: Bradley-Terry, DPO), the toy chatbot task (``task``), the networks
(``models``), supervised fine-tuning, the reward model and DPO (``train``) and the PPO learner
(``learner``)."""
