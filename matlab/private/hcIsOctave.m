function tf = hcIsOctave()
    % HCISOCTAVE  True when running in GNU Octave rather than MATLAB (internal).
    tf = exist('OCTAVE_VERSION', 'builtin') > 0;
end
