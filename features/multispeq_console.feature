@target_multispeq
Feature: The MultispeQ console as a real unit speaks it
  Scenario: A plain serial client gets the ready line and a checksummed memory dump
    Given a multispeq unit running 1.17
    When a plain serial client sends "hello+"
    Then it receives "MultispeQ Ready"
    When a plain serial client sends "print_memory+"
    Then the reply ends with the CRC-32 of the bytes before it

  Scenario: A reset drops the port and it comes back at the same address
    Given a multispeq unit running 1.17
    When the unit is reset through its console
    Then the unit answers at the same address after the reset
