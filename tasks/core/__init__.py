"""What every step needs: errors a user can act on, the home folder and run folders, scores, plots."""
