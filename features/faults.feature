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

  @target_mobiusflow @sim_only @destructive
  Scenario: A token that expires in the middle of a restore is renewed and the round trip holds
    Given a mobiusflow unit running 3021
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    And the unit's tokens expire after 0.5 seconds without notice
    And the unit's backup downloads are slowed to 8000 bytes per second
    When I restore the backup
    Then a new backup equals the first, field by field
    And the unit answered 401 "token_expired" at least once

  @target_mobiusflow @sim_only @destructive
  Scenario: The restore waits out the reboot behind the proxy's 502 pages
    Given a mobiusflow unit running 3021
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    And the unit shows its proxy's 502 page for 1 second while rebooting
    When I restore the backup
    Then a new backup equals the first, field by field
    And the driver waited through 502 answers

  @target_mobiusflow @sim_only @destructive
  Scenario: A restore that fails on the node is rolled back and reported
    Given a mobiusflow unit running 3021
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    And the unit's restore fails at "Writing node configuration"
    When I restore the backup onto the failing unit
    Then the restore fails with a device error that mentions "restore rolled back"
    And the unit's memory is unchanged

  @target_mobiusflow @destructive
  Scenario Outline: A backup ZIP with a <damage> is refused before the node is touched
    Given a mobiusflow unit running 3021
    And the unit has a distinctive calibration
    And I back up the unit
    And the backup ZIP is damaged: <damage>
    When I restore the edited backup onto the unit
    Then the restore is refused as bad input that mentions "<code>"
    And the unit's memory is unchanged

    Examples:
      | damage                      | code                    |
      | zip-slip entry              | unsafe_path             |
      | absolute path entry         | unsafe_path             |
      | drive letter entry          | unsafe_path             |
      | symbolic link entry         | unsafe_path             |
      | encrypted entry             | encrypted_zip           |
      | zip bomb                    | zip_bomb_suspected      |
      | corrupted byte              | not_a_zip               |
      | truncated file              | not_a_zip               |
      | another target's ZIP        | manifest_missing        |
      | another product's manifest  | not_a_mobiusflow_backup |
      | tampered configuration file | integrity_failed        |

  @target_neuroomnet @destructive
  Scenario Outline: A <damage> restore point is refused before the server is touched
    Given a neuroomnet unit running 4.2.0
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

  @target_planktoscope @destructive
  Scenario Outline: A planktoscope bundle that is <damage> is refused before the unit is touched
    Given a planktoscope unit running v2024.0.0 reached over http
    And I back up the unit
    And the backup file is <damage>
    When I restore the edited backup onto the unit
    Then the restore is refused as bad input
    And the unit's memory is unchanged

    Examples:
      | damage    |
      | truncated |
      | foreign   |

  @target_planktoscope @destructive
  Scenario Outline: A planktoscope bundle with <damage> is refused before the unit is touched
    Given a planktoscope unit running v2024.0.0 reached over http
    And I back up the unit
    And the bundle is damaged: <damage>
    When I restore the edited backup onto the unit
    Then the restore is refused as bad input before anything is uploaded
    And the unit's memory is unchanged

    Examples:
      | damage                     |
      | an image altered           |
      | a path escaping its folder |
      | a zip bomb                 |

  @target_planktoscope @sim_only
  Scenario: A dataset that fails its integrity check is backed up but not restored without force
    Given a planktoscope unit running v2024.0.0 reached over http
    And an image of a dataset on the unit is corrupted
    When I back up the unit
    Then the backup is flagged "fails its integrity.check"
    When I try to restore the backup
    Then the restore is refused because "HZ-20"

  @target_planktoscope @sim_only
  Scenario: A white balance out of range kills the imager after the reboot
    Given a planktoscope unit running v2024.0.0 reached over http
    And the white balance is set to red 40 on the dashboard and the unit reboots
    Then the imager reports Dead

  @target_bactobox @destructive
  Scenario Outline: A <damage> GMI is refused before the bactobox is touched
    Given a bactobox unit running 2.6.3
    And I back up the unit
    And the backup file is <damage>
    When I restore the edited backup onto the unit
    Then the restore is refused as bad input
    And the unit's memory is unchanged

    Examples:
      | damage    |
      | truncated |
      | foreign   |

  @target_bactobox @destructive @sim_only
  Scenario: A power cut in the middle of a restore is detected and a second restore succeeds
    Given a bactobox unit running 2.6.3
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    When the power is cut in the middle of restoring the backup
    And the unit is powered on again
    Then the unit reports an incomplete restore
    When I restore the backup
    Then a new backup equals the first, field by field
