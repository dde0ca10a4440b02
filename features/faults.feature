@faults
Feature: Bad links and bad artifacts lose nothing
  A corrupted reply never becomes a backup; a corrupted or foreign artifact is refused before the unit
  is touched, with a one-line reason.

  @target_multispeq @sim_only
  Scenario: A reply whose checksum does not match is never filed as a backup
    Given a multispeq unit running 1.17
    And the link corrupts one byte of every memory dump
    When I try to back up the unit
    Then the backup fails with a device error that mentions "CRC"
    And no backup is filed

  @target_multispeq @sim_only
  Scenario: A single corrupted reply is retried and the backup succeeds
    Given a multispeq unit running 1.17
    And the link corrupts one byte of the next memory dump only
    When I back up the unit
    Then the backup verifies

  @target_multispeq @destructive
  Scenario: An edited backup is refused before the unit is touched
    Given a multispeq unit running 1.17
    And the unit has a distinctive calibration
    And I back up the unit
    And the backup file is edited by hand
    When I restore the edited backup onto the unit
    Then the restore is refused as bad input that mentions "CRC"
    And the unit's memory is unchanged

  @target_multispeq @destructive
  Scenario Outline: A <damage> artifact is refused before the unit is touched
    Given a multispeq unit running 1.17
    And the unit has a distinctive calibration
    And I back up the unit
    And the backup file is <damage>
    When I restore the edited backup onto the unit
    Then the restore is refused as bad input
    And the unit's memory is unchanged

    Examples:
      | damage    |
      | truncated |
      | foreign   |
