"""Accounts: users, their roles and what each role may do, and resolving who acts."""
