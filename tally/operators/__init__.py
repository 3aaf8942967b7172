"""Console operators: admins change things, support staff look and trace."""
